//! Evidence of a peer's misbehaviour that a third party can check without trusting whoever
//! recorded it: the accused's signed envelopes and its certificate, in one self-contained,
//! versioned encoding. [`verify_evidence`] checks that the certificate chains to the cluster
//! CA and names the accused node, that every envelope is from that node and its signature
//! verifies under that certificate, and, where the fault can be re-checked from the messages
//! alone at this layer (equivocation: two different messages for one slot), that it holds.
//!
//! What evidence proves is authorship: "node X signed exactly these bytes for session S,
//! round R, recipient T". It cannot prove a withheld message (silence leaves nothing
//! signed), and for faults that depend on state the messages do not carry (a signing outcome
//! that does not fit the proposal it answers, a share that claims another signer's index)
//! it proves only what was sent; the operator judges the bytes. `mpc_node::evidence` adds the
//! re-check of faults that need the protocols' message types (a payload that does not decode).
//!
//! Encoding (all integers big-endian):
//!
//! ```text
//! "mpc-wallet/evidence" | version u8 (1) | fault u8 | accused u16
//! | certificate length u32 | certificate (DER)
//! | envelope count u16 | { envelope length u32 | envelope (wire bytes, signed) }*
//! ```

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::{node_name, Envelope, NodeId};

const MAGIC: &[u8] = b"mpc-wallet/evidence";
/// Evidence format version.
pub const EVIDENCE_VERSION: u8 = 1;
/// Bounds on what [`Evidence::decode`] accepts, far above anything recorded (a fault is shown
/// by one or two envelopes).
const MAX_ENVELOPES: usize = 16;

/// What the envelopes are said to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Messages the accused sent, with no fault the bytes alone settle: the evidence proves
    /// that it sent exactly these, for an operator to inspect (e.g. a signing outcome that
    /// does not fit the proposal it answers).
    Exhibit,
    /// Two different messages for the same session, protocol, round and recipient: re-checked
    /// by [`verify_evidence`].
    Equivocation,
    /// A protocol message whose payload does not decode as its protocol's message type:
    /// re-checked by `mpc_node::evidence::verify_evidence`, which knows the types.
    Undecodable,
}

impl Fault {
    fn code(self) -> u8 {
        match self {
            Fault::Exhibit => 0,
            Fault::Equivocation => 1,
            Fault::Undecodable => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        [Fault::Exhibit, Fault::Equivocation, Fault::Undecodable]
            .into_iter()
            .find(|f| f.code() == code)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Exhibit => "exhibit",
            Fault::Equivocation => "equivocation",
            Fault::Undecodable => "undecodable",
        }
    }
}

/// The accused's signed envelopes and its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub accused: NodeId,
    pub fault: Fault,
    /// The accused's certificate (DER), the one its envelopes were checked against.
    pub certificate: CertificateDer<'static>,
    /// As received: each carries the accused's signature.
    pub envelopes: Vec<Envelope>,
}

/// Evidence whose certificate, signatures and (where it can be re-checked here) fault held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEvidence {
    pub accused: NodeId,
    pub fault: Fault,
    /// SHA-256 of the accused's certificate (hex), as `certs::fingerprint` shows it.
    pub certificate_fingerprint: String,
    pub envelopes: Vec<Envelope>,
    /// Whether the fault itself was re-checked from the messages (else only their authorship
    /// was: [`Fault::Exhibit`], or a fault this layer cannot re-check).
    pub fault_rechecked: bool,
}

/// Why evidence does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error("malformed evidence: {0}")]
    Malformed(String),
    #[error("unknown evidence version {0}")]
    UnknownVersion(u8),
    #[error("the evidence holds no envelope")]
    NoEnvelope,
    #[error("the accused's certificate does not chain to the cluster CA: {0}")]
    Certificate(String),
    #[error("the certificate does not name node {0}")]
    NotTheAccused(NodeId),
    #[error("envelope {index} is from node {from}, not from the accused node {accused}")]
    NotFromTheAccused {
        index: usize,
        from: NodeId,
        accused: NodeId,
    },
    #[error(
        "the signature of envelope {index} does not verify under node {accused}'s certificate"
    )]
    BadSignature { index: usize, accused: NodeId },
    #[error("the fault ({fault}) is not shown: {reason}")]
    FaultNotShown { fault: &'static str, reason: String },
}

impl Evidence {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.push(EVIDENCE_VERSION);
        out.push(self.fault.code());
        out.extend_from_slice(&self.accused.get().to_be_bytes());
        // Certificates and envelopes are bounded by the frame limit, far below 4 GiB.
        out.extend_from_slice(&(self.certificate.len() as u32).to_be_bytes());
        out.extend_from_slice(self.certificate.as_ref());
        out.extend_from_slice(&(self.envelopes.len() as u16).to_be_bytes());
        for e in &self.envelopes {
            let bytes = e.encode();
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(&bytes);
        }
        out
    }

    /// Parses the encoding; checks nothing but its shape (see [`verify_evidence`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, EvidenceError> {
        let mut r = Reader(bytes);
        if r.take(MAGIC.len())? != MAGIC {
            return Err(EvidenceError::Malformed("not mpc-wallet evidence".into()));
        }
        let version = r.u8()?;
        if version != EVIDENCE_VERSION {
            return Err(EvidenceError::UnknownVersion(version));
        }
        let fault = Fault::from_code(r.u8()?)
            .ok_or_else(|| EvidenceError::Malformed("unknown fault".into()))?;
        let accused = NodeId::new(r.u16()?)
            .ok_or_else(|| EvidenceError::Malformed("accused node 0".into()))?;
        let cert_len = r.u32()?;
        let certificate = CertificateDer::from(r.take(cert_len)?.to_vec());
        let count = usize::from(r.u16()?);
        if count > MAX_ENVELOPES {
            return Err(EvidenceError::Malformed(format!("{count} envelopes")));
        }
        let mut envelopes = Vec::with_capacity(count);
        for index in 0..count {
            let len = r.u32()?;
            let envelope = Envelope::decode(r.take(len)?)
                .map_err(|e| EvidenceError::Malformed(format!("envelope {index}: {e}")))?;
            envelopes.push(envelope);
        }
        if !r.0.is_empty() {
            return Err(EvidenceError::Malformed("trailing bytes".into()));
        }
        Ok(Self {
            accused,
            fault,
            certificate,
            envelopes,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EvidenceError> {
        if self.0.len() < n {
            return Err(EvidenceError::Malformed("truncated".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, EvidenceError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, EvidenceError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<usize, EvidenceError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
}

/// Checks `evidence` (the encoding of an [`Evidence`]) against the cluster CA `ca_cert`
/// (DER), trusting nothing else, in particular not whoever recorded it:
///
/// * the accused's certificate chains to `ca_cert`, is valid now for client authentication
///   (as a node certificate must be), and names the accused node (`node-<id>`);
/// * there is at least one envelope, every one is from the accused, and its signature
///   verifies under that certificate;
/// * [`Fault::Equivocation`]: two envelopes for the same session, protocol, round and
///   recipient with different contents (re-checked here), protocol messages only. [`Fault::Undecodable`] is re-checked
///   by the node layer, which knows the protocols' message types; [`Fault::Exhibit`] claims no
///   fault the bytes alone settle.
pub fn verify_evidence(
    evidence: &[u8],
    ca_cert: &CertificateDer<'_>,
) -> Result<VerifiedEvidence, EvidenceError> {
    let e = Evidence::decode(evidence)?;
    let cert = webpki::EndEntityCert::try_from(&e.certificate)
        .map_err(|err| EvidenceError::Certificate(err.to_string()))?;
    let anchor = webpki::anchor_from_trusted_cert(ca_cert)
        .map_err(|err| EvidenceError::Certificate(format!("cluster CA: {err}")))?;
    let provider = rustls::crypto::ring::default_provider();
    cert.verify_for_usage(
        provider.signature_verification_algorithms.all,
        &[anchor],
        &[],
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|err| EvidenceError::Certificate(err.to_string()))?;
    let named = ServerName::try_from(node_name(e.accused))
        .map(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
        .unwrap_or(false);
    if !named {
        return Err(EvidenceError::NotTheAccused(e.accused));
    }
    if e.envelopes.is_empty() {
        return Err(EvidenceError::NoEnvelope);
    }
    for (index, envelope) in e.envelopes.iter().enumerate() {
        if envelope.from != e.accused {
            return Err(EvidenceError::NotFromTheAccused {
                index,
                from: envelope.from,
                accused: e.accused,
            });
        }
        envelope
            .verify(&e.certificate)
            .map_err(|_| EvidenceError::BadSignature {
                index,
                accused: e.accused,
            })?;
    }
    let fault_rechecked = match e.fault {
        Fault::Equivocation => {
            let [a, b] = e.envelopes.as_slice() else {
                return Err(EvidenceError::FaultNotShown {
                    fault: e.fault.as_str(),
                    reason: "equivocation is shown by exactly two envelopes".into(),
                });
            };
            // Control messages are not one per slot: a coordinator sends the same participant a
            // proposal and then a commit, in one session, both round 0. Two of them would
            // "show" equivocation by an honest node, so only protocol messages can.
            if a.is_control() || b.is_control() {
                return Err(EvidenceError::FaultNotShown {
                    fault: e.fault.as_str(),
                    reason: "control messages are several per session: no equivocation".into(),
                });
            }
            let slot = |x: &Envelope| (x.session, x.protocol, x.round, x.to);
            if slot(a) != slot(b) {
                return Err(EvidenceError::FaultNotShown {
                    fault: e.fault.as_str(),
                    reason: "the two envelopes are for different slots".into(),
                });
            }
            if a.content_digest() == b.content_digest() {
                return Err(EvidenceError::FaultNotShown {
                    fault: e.fault.as_str(),
                    reason: "the two envelopes have the same content".into(),
                });
            }
            true
        }
        Fault::Exhibit | Fault::Undecodable => false,
    };
    Ok(VerifiedEvidence {
        accused: e.accused,
        fault: e.fault,
        certificate_fingerprint: crate::certs::fingerprint(&e.certificate),
        envelopes: e.envelopes,
        fault_rechecked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        certs::{parse_certs, ClusterCa},
        NodeKey, SessionId,
    };

    struct Node {
        key: NodeKey,
        cert: CertificateDer<'static>,
    }

    fn node(ca: &ClusterCa, id: u16) -> Node {
        let issued = ca
            .issue_node(
                NodeId::must(id),
                &[],
                time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
                1,
            )
            .unwrap();
        Node {
            key: NodeKey::from_pem(&issued.key_pem).unwrap(),
            cert: parse_certs(&issued.cert_pem).unwrap().remove(0),
        }
    }

    fn ca_der(ca: &ClusterCa) -> CertificateDer<'static> {
        parse_certs(ca.cert_pem()).unwrap().remove(0)
    }

    fn message(from: u16, payload: &[u8], key: &NodeKey) -> Envelope {
        Envelope {
            protocol: 6,
            session: SessionId([3; 16]),
            round: 0,
            from: NodeId::must(from),
            to: None,
            payload: payload.to_vec(),
            signature: None,
        }
        .signed(key)
        .unwrap()
    }

    #[test]
    fn equivocation_is_rechecked_and_authorship_is_checked_against_the_ca() {
        let ca = ClusterCa::generate("test", 1).unwrap();
        let (two, three) = (node(&ca, 2), node(&ca, 3));
        let evidence = |fault, envelopes: Vec<Envelope>| Evidence {
            accused: NodeId::must(2),
            fault,
            certificate: two.cert.clone(),
            envelopes,
        };
        let a = message(2, b"a", &two.key);
        let b = message(2, b"b", &two.key);
        let good = evidence(Fault::Equivocation, vec![a.clone(), b.clone()]).encode();
        assert_eq!(Evidence::decode(&good).unwrap().envelopes, [a.clone(), b]);
        let verified = verify_evidence(&good, &ca_der(&ca)).unwrap();
        assert!(verified.fault_rechecked);
        assert_eq!(verified.accused, NodeId::must(2));
        assert_eq!(
            verified.certificate_fingerprint,
            crate::certs::fingerprint(&two.cert)
        );

        // The same message twice (re-signed: ECDSA is randomized) is no equivocation.
        let again = message(2, b"a", &two.key);
        let same = evidence(Fault::Equivocation, vec![a.clone(), again]).encode();
        assert!(matches!(
            verify_evidence(&same, &ca_der(&ca)),
            Err(EvidenceError::FaultNotShown { .. })
        ));
        // An honest coordinator's proposal and commit to one participant share a session and
        // round 0: two different control messages are no equivocation.
        let control = |payload: &[u8]| {
            Envelope {
                protocol: crate::CONTROL,
                to: Some(NodeId::must(3)),
                signature: None,
                ..message(2, payload, &two.key)
            }
            .signed(&two.key)
            .unwrap()
        };
        let framed = evidence(
            Fault::Equivocation,
            vec![control(b"propose"), control(b"commit")],
        )
        .encode();
        assert!(matches!(
            verify_evidence(&framed, &ca_der(&ca)),
            Err(EvidenceError::FaultNotShown { .. })
        ));
        // Shown as an exhibit, one message proves only that node 2 sent it.
        let exhibit = evidence(Fault::Exhibit, vec![a.clone()]).encode();
        assert!(
            !verify_evidence(&exhibit, &ca_der(&ca))
                .unwrap()
                .fault_rechecked
        );
        // Node 3's message in node 2's evidence; node 3 signing in node 2's name.
        let theirs = evidence(Fault::Exhibit, vec![message(3, b"c", &three.key)]).encode();
        assert!(matches!(
            verify_evidence(&theirs, &ca_der(&ca)),
            Err(EvidenceError::NotFromTheAccused { .. })
        ));
        let forged = evidence(Fault::Exhibit, vec![message(2, b"c", &three.key)]).encode();
        assert!(matches!(
            verify_evidence(&forged, &ca_der(&ca)),
            Err(EvidenceError::BadSignature { index: 0, .. })
        ));
        // Another cluster's CA; no envelope; trailing bytes; another version.
        let other = ClusterCa::generate("other", 1).unwrap();
        assert!(matches!(
            verify_evidence(&exhibit, &ca_der(&other)),
            Err(EvidenceError::Certificate(_))
        ));
        let empty = evidence(Fault::Exhibit, vec![]).encode();
        assert_eq!(
            verify_evidence(&empty, &ca_der(&ca)),
            Err(EvidenceError::NoEnvelope)
        );
        let mut trailing = exhibit.clone();
        trailing.push(0);
        assert!(matches!(
            verify_evidence(&trailing, &ca_der(&ca)),
            Err(EvidenceError::Malformed(_))
        ));
        let mut version = exhibit.clone();
        version[MAGIC.len()] = 2;
        assert_eq!(
            verify_evidence(&version, &ca_der(&ca)),
            Err(EvidenceError::UnknownVersion(2))
        );
        // Every truncation is refused, never a panic.
        for cut in 0..exhibit.len() {
            assert!(verify_evidence(&exhibit[..cut], &ca_der(&ca)).is_err());
        }
    }
}
