//! Evidence of misbehaviour (issue 18): checking it on any node, trusting only the cluster
//! CA. The envelope-level checks (the accused's certificate chains to the CA and names it, every
//! envelope is its and signed by it, equivocation) are `mpc_transport::evidence`; this adds the
//! re-check that needs the protocols' message types: a payload that does not decode.
//!
//! What can be re-checked from the messages alone, and what cannot:
//!
//! * equivocation (two different signed messages for one slot) and a protocol message that
//!   does not decode: re-checked, so the evidence proves the fault itself;
//! * a signing outcome that fails the coordinator's check (malformed for the proposal, a FROST
//!   share claiming another signer's index): the check needs the proposal, the wallet and the
//!   signer set, which the envelope does not carry, so the evidence ([`Fault::Exhibit`])
//!   proves only that the node sent exactly these bytes in that session; the operator judges
//!   them;
//! * silence (a withheld message): nothing was signed, so there is no evidence at all.

use mpc_protocols::{ecdsa, encoding, refresh, reshare, schnorr, ProtocolKind};
use mpc_transport::certs::parse_certs;
pub use mpc_transport::evidence::{Evidence, EvidenceError, Fault, VerifiedEvidence};
use rustls_pki_types::CertificateDer;
use uuid::Uuid;

use crate::{Node, NodeError};

/// Checks `evidence` against the cluster CA `ca_cert` (DER): everything
/// [`mpc_transport::evidence::verify_evidence`] checks, and for [`Fault::Undecodable`] that
/// every envelope is a protocol message whose payload indeed does not decode as that
/// protocol's message type (so `fault_rechecked` is then true).
pub fn verify_evidence(
    evidence: &[u8],
    ca_cert: &CertificateDer<'_>,
) -> Result<VerifiedEvidence, EvidenceError> {
    let mut verified = mpc_transport::evidence::verify_evidence(evidence, ca_cert)?;
    if verified.fault == Fault::Undecodable {
        for (index, envelope) in verified.envelopes.iter().enumerate() {
            let not_shown = |reason: String| EvidenceError::FaultNotShown {
                fault: Fault::Undecodable.as_str(),
                reason,
            };
            let Some(kind) = ProtocolKind::from_code(envelope.protocol) else {
                return Err(not_shown(format!(
                    "envelope {index} is not a protocol message (protocol {})",
                    envelope.protocol
                )));
            };
            if decodes(kind, &envelope.payload) {
                return Err(not_shown(format!(
                    "envelope {index}'s payload decodes as a {} message",
                    kind.as_str()
                )));
            }
        }
        verified.fault_rechecked = true;
    }
    Ok(verified)
}

/// Whether `payload` decodes as `kind`'s message type, as the node's delivery decodes it.
fn decodes(kind: ProtocolKind, payload: &[u8]) -> bool {
    match kind {
        ProtocolKind::AuxInfo => encoding::decode::<ecdsa::AuxInfoMsg>(payload).is_ok(),
        ProtocolKind::EcdsaKeygen => encoding::decode::<ecdsa::KeygenMsg>(payload).is_ok(),
        // Presignature generation and interactive signing share one message type.
        ProtocolKind::EcdsaPresign | ProtocolKind::EcdsaSign => {
            encoding::decode::<ecdsa::SigningMsg>(payload).is_ok()
        }
        ProtocolKind::SchnorrKeygen => encoding::decode::<schnorr::KeygenMsg>(payload).is_ok(),
        ProtocolKind::SchnorrSign => encoding::decode::<schnorr::SigningMsg>(payload).is_ok(),
        ProtocolKind::KeyRefresh => encoding::decode::<refresh::RefreshMsg>(payload).is_ok(),
        ProtocolKind::KeyReshare => encoding::decode::<reshare::ReshareMsg>(payload).is_ok(),
    }
}

/// Why an incident's evidence could not be checked, or did not verify.
#[derive(Debug, thiserror::Error)]
pub enum IncidentCheckError {
    #[error("no incident {0} on this node")]
    NotFound(Uuid),
    #[error("incident {0} has no evidence (silence, or a participant's unproven word)")]
    NoEvidence(Uuid),
    #[error(transparent)]
    Invalid(#[from] EvidenceError),
    #[error(transparent)]
    Node(#[from] NodeError),
}

impl Node {
    /// The cluster CA this node trusts (the first certificate of its `tls.ca` file).
    pub fn cluster_ca(&self) -> Result<CertificateDer<'static>, NodeError> {
        let path = &self.inner.config.tls.ca;
        let pem = std::fs::read_to_string(path)
            .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
        parse_certs(&pem)?
            .into_iter()
            .next()
            .ok_or_else(|| NodeError::Config(format!("{}: no certificate", path.display())))
    }

    /// Checks `evidence` (recorded here or on any other node) against this node's CA.
    pub fn verify_evidence(&self, evidence: &[u8]) -> Result<VerifiedEvidence, IncidentCheckError> {
        Ok(verify_evidence(evidence, &self.cluster_ca()?)?)
    }

    /// Checks the evidence of incident `id` of this node's store against this node's CA.
    pub async fn verify_incident(&self, id: Uuid) -> Result<VerifiedEvidence, IncidentCheckError> {
        let incident = self
            .inner
            .store
            .incident(id)
            .await
            .map_err(NodeError::from)?
            .ok_or(IncidentCheckError::NotFound(id))?;
        let evidence = incident
            .evidence
            .ok_or(IncidentCheckError::NoEvidence(id))?;
        self.verify_evidence(&evidence)
    }
}
