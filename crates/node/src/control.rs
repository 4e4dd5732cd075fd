//! Control messages between nodes: proposals from a coordinator, outcomes back to it,
//! commit/abort, heartbeats. They travel as CBOR in envelopes with protocol [`CONTROL`].
//!
//! A proposal is a request, not an order: every participant checks it against its own store
//! and config before running anything (design invariant 7).

use mpc_protocols::{
    ecdsa::{PartialSignature, PresignaturePublic},
    encoding,
    schnorr::SchnorrSignatureShare,
    signature::{EcdsaSignature, PublicKey},
    DerivationPath,
};
use mpc_transport::{Envelope, NodeId, SessionId, CONTROL};
use mpc_types::WalletId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{refusal::Refusal, NodeError};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Control {
    Heartbeat {
        version: String,
        sent_at_ms: i64,
        /// The sender's audit-log head, and the audit-head check with the receiver
        /// (`audit_heads`): the seq it asks the receiver about, its answer to the receiver's
        /// last question. Absent from nodes that predate them.
        #[serde(default)]
        audit_head: Option<mpc_store::AuditHead>,
        #[serde(default)]
        audit_question: Option<u64>,
        #[serde(default)]
        audit_answer: Option<crate::audit_heads::AuditAnswer>,
        /// Whether the sender holds a set of safe primes for aux info (the refill leader
        /// starts the ceremony by itself once every node does). Absent from older nodes.
        #[serde(default)]
        primes_ready: Option<bool>,
    },
    Propose(Proposal),
    /// A participant's result for a proposal, sent to the coordinator.
    Outcome {
        session: Uuid,
        result: Result<Outcome, Refusal>,
    },
    /// The coordinator saw every participant succeed with the same result.
    Commit {
        session: Uuid,
    },
    /// The ceremony failed; participants discard what it produced.
    Abort {
        session: Uuid,
        reason: String,
    },
    /// A participant holding a refreshed share whose commit or abort it never received (it
    /// restarted, or its wait ended) asks the refresh's coordinator, which answers with the
    /// `Commit` or `Abort` it decided, or not at all while it is still deciding.
    Decision {
        session: Uuid,
        attempt: u32,
    },
    /// The pool's refill leader retired these presignatures of `wallet_id` (it made them for
    /// outputs that are spent now): every other member of their signer sets deletes its
    /// share too. A receiver retires only ready ones of that wallet whose signer set includes
    /// the sender; a notice lost leaves the share to expire with its TTL.
    Retire {
        wallet_id: WalletId,
        presignatures: Vec<String>,
    },
    /// A transaction the cluster signed, sent to the wallets' other participants so they learn
    /// its change indices. Advisory: a receiver learns only what it verifies itself (every
    /// input's signature by the wallets' keys, for this exact PSBT).
    Signed {
        wallet_ids: Vec<WalletId>,
        /// The unsigned PSBT the signers checked (base64).
        psbt: String,
        /// The signed transaction (hex).
        raw_transaction: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proposal {
    pub session: Uuid,
    pub body: ProposalBody,
    /// The fencing token of the lock (or leadership) the coordinator proposes under: the
    /// ceremony lock for keygen and aux info, the refill leadership for pool presignatures
    /// (etcd backend only; see `locks`).
    pub fencing_token: Option<u64>,
}

/// What a wallet is, as proposed for key generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletSpec {
    pub id: WalletId,
    pub name: String,
    pub scheme: mpc_bitcoin::Scheme,
    pub threshold: u16,
    /// Node ids, sorted; a node's key-generation index is its position here.
    pub participants: Vec<NodeId>,
    pub network: mpc_types::Network,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ProposalBody {
    AuxInfo {
        node_set: Vec<NodeId>,
    },
    Keygen {
        wallet: WalletSpec,
    },
    Presign {
        wallet_id: WalletId,
        path: DerivationPath,
        /// Node ids of the signer set, sorted.
        signers: Vec<NodeId>,
        count: u32,
    },
    Sign {
        wallet_ids: Vec<WalletId>,
        /// The PSBT, base64: signers parse it themselves.
        psbt: String,
        signers: Vec<NodeId>,
        /// Per input: the presignature to use, if any.
        presignatures: Vec<Option<String>>,
        /// The key epoch of each wallet as the coordinator holds it: a signer on another epoch
        /// (a refresh committed between the two) refuses instead of signing with a share that
        /// would not combine, which would get it blamed. Absent from older coordinators.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        key_epochs: Vec<u64>,
        /// The human approvals of the request, when it had to wait for them: each signer
        /// checks them itself against its own approvers (absent on the wire when none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approvals: Option<ApprovalEvidence>,
    },
    /// Key refresh of one wallet: every participant deals, and stores its new share as
    /// pending for `key_epoch` (the wallet's current key epoch plus one).
    Refresh {
        wallet_id: WalletId,
        key_epoch: u64,
    },
    /// Resharing of one wallet to another committee or threshold, or a repair (the same
    /// committee, the repaired node only receiving): `ceremony::reshare`.
    Reshare(Box<ReshareSpec>),
}

/// A resharing as proposed. Every node of the run derives the plan from it
/// (`Plan::for_committees(old_participants, dealers, wallet.participants, wallet.threshold)`)
/// and checks it against its own state before taking part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReshareSpec {
    /// The wallet as it will be: its id, name, scheme and network, with the new threshold and
    /// the new participants (sorted; a node's new index is its position there).
    pub wallet: WalletSpec,
    /// The wallet's key epoch after the commit: its current one plus one.
    pub key_epoch: u64,
    /// The wallet's participants now (sorted, old index order).
    pub old_participants: Vec<NodeId>,
    /// The old participants that deal: exactly the old threshold of them.
    pub dealers: Vec<NodeId>,
    /// The old key's public side, for the nodes that hold no share of it; an old member
    /// refuses one that differs from its own.
    pub key_info: mpc_protocols::reshare::KeyInfo,
}

/// The approvals of a request as they travel with its signing proposal. Every signer builds
/// the signed message itself from the PSBT it parsed, with this request id and expiry: a
/// coordinator that changes either, or the transaction, invalidates the signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalEvidence {
    pub request: Uuid,
    pub expires_at_ms: i64,
    pub approvals: Vec<mpc_bitcoin::approval::SignedDecision>,
}

impl ProposalBody {
    pub fn kind(&self) -> &'static str {
        match self {
            ProposalBody::AuxInfo { .. } => "aux-info",
            ProposalBody::Keygen { .. } => "keygen",
            ProposalBody::Presign { .. } => "presign",
            ProposalBody::Sign { .. } => "sign",
            ProposalBody::Refresh { .. } => "refresh",
            ProposalBody::Reshare(_) => "reshare",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Outcome {
    AuxInfo {
        public_digest: String,
    },
    Keygen {
        public_key: PublicKey,
        chain_code: String,
    },
    Presign {
        ids: Vec<String>,
    },
    Sign {
        inputs: Vec<InputOutcome>,
    },
    /// The refreshed key's public shares, by key-generation index; the group key is unchanged.
    Refresh {
        public_shares: Vec<PublicKey>,
        /// ECDSA: the public digest of the node set's new aux info, made in the same ceremony.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        aux_info: Option<String>,
    },
    /// The digest of the reshared key's public side (group key, threshold, evaluation points,
    /// public shares, dealings), hex; every node of the run must report the same.
    Reshare {
        digest: String,
    },
    /// Acknowledges a commit or abort.
    Committed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum InputOutcome {
    /// From a presignature: the partial signature and the presignature's public data.
    Partial {
        partial: PartialSignature,
        public: PresignaturePublic,
    },
    Ecdsa(EcdsaSignature),
    /// FROST: this signer's share, aggregated by the coordinator.
    FrostShare(SchnorrSignatureShare),
}

impl Control {
    pub fn envelope(&self, session: Uuid, from: NodeId, to: NodeId) -> Result<Envelope, NodeError> {
        Ok(Envelope {
            protocol: CONTROL,
            session: SessionId::from_uuid(session),
            round: 0,
            from,
            to: Some(to),
            payload: encoding::encode(self)?,
            signature: None,
        })
    }

    pub fn from_envelope(envelope: &Envelope) -> Result<Self, NodeError> {
        Ok(encoding::decode(&envelope.payload)?)
    }
}
