use crate::PartyIndex;

/// Why a protocol run or a protocol-level check failed.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
    #[error("invalid signer set {signers:?}: {reason}")]
    InvalidSignerSet {
        signers: Vec<PartyIndex>,
        reason: String,
    },
    #[error("invalid derivation path: {0}")]
    InvalidPath(String),
    #[error("aux info generation failed: {0}")]
    AuxInfo(String),
    #[error("key generation failed: {0}")]
    Keygen(String),
    #[error("presignature generation failed: {0}")]
    Presign(String),
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("presignature is bound to {bound}, not to {requested}")]
    PresignatureMismatch { bound: String, requested: String },
    #[error("partial signatures do not combine into a valid signature: {0}")]
    Combine(String),
    /// Signer `signer` (a key-generation index) sent a partial signature that does not match
    /// its commitment in the presignature: it, and no one else, cheated.
    #[error("the partial signature of signer {signer} does not match its presignature commitment")]
    BadPartialSignature { signer: PartyIndex },
    /// Signer `signer` sent a FROST signature share that does not fit the nonce commitments it
    /// itself listed with it, or listed commitments of its own other than those it sent the
    /// aggregator: it, and no one else, cheated.
    #[error("the FROST signature share of signer {signer} is invalid")]
    BadSignatureShare { signer: PartyIndex },
    #[error("signature does not verify against the derived public key")]
    InvalidSignature,
    #[error("key material is invalid: {0}")]
    InvalidKeyMaterial(String),
    /// This party found that `dealer`'s dealing (in a key refresh or a resharing) does not
    /// check. Indices are the run's: for a refresh the key's, for a resharing the plan's.
    #[error("dealer {dealer} cheated: {fault}")]
    DealerCheated {
        dealer: PartyIndex,
        fault: crate::dealing::DealerFault,
    },
    /// Party `complainer` reported that `dealer`'s dealing to it does not check. Only the two
    /// of them know which one lies; the run fails for everyone either way.
    #[error("party {complainer} accuses dealer {dealer}: {fault}")]
    DealerAccused {
        complainer: PartyIndex,
        dealer: PartyIndex,
        fault: crate::dealing::DealerFault,
    },
    /// These parties computed different new key info than this party (or none).
    #[error("parties {parties:?} did not confirm the same new key info")]
    NotConfirmed { parties: Vec<PartyIndex> },
    #[error("key refresh failed: {0}")]
    Refresh(String),
    #[error("key resharing failed: {0}")]
    Reshare(String),
    #[error("encoding: {0}")]
    Encoding(String),
}

impl ProtocolError {
    /// Wraps any protocol library error, keeping its full causal chain in the message.
    pub(crate) fn chain(err: &dyn std::error::Error) -> String {
        let mut out = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            out.push_str(": ");
            out.push_str(&cause.to_string());
            source = cause.source();
        }
        out
    }
}

/// A path that does not parse or is not derivable (`mpc_types::DerivationPath`).
impl From<mpc_types::ParseError> for ProtocolError {
    fn from(e: mpc_types::ParseError) -> Self {
        match e {
            mpc_types::ParseError::Path(reason) => ProtocolError::InvalidPath(reason),
            other => ProtocolError::InvalidParameters(other.to_string()),
        }
    }
}
