//! The envelope: `{version, protocol, session, round, from, to | broadcast, payload}` in a
//! fixed big-endian header followed by the payload. Decoding checks every length; anything
//! malformed is an error, never a panic.

use crate::{NodeId, TransportError};

/// Envelope format version; a node refuses versions it does not know.
pub const VERSION: u8 = 1;
/// The `protocol` value of control messages (proposals, results, heartbeats).
pub const CONTROL: u8 = 0;
/// `to` value meaning "every participant".
const BROADCAST: u16 = 0;
const HEADER: usize = 1 + 1 + 16 + 2 + 2 + 2 + 4;

/// A 16-byte session id, agreed by all participants of one protocol run.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub [u8; 16]);

impl SessionId {
    pub fn from_uuid(u: uuid::Uuid) -> Self {
        Self(*u.as_bytes())
    }

    pub fn as_uuid(&self) -> uuid::Uuid {
        uuid::Uuid::from_bytes(self.0)
    }

    /// A sub-session derived from this one (e.g. one per transaction input), the same at
    /// every participant.
    pub fn derive(&self, label: &str) -> Self {
        use sha2::{Digest, Sha256};
        let h = Sha256::new()
            .chain_update(b"mpc-wallet/sub-session/v1")
            .chain_update(self.0)
            .chain_update(label.as_bytes())
            .finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&h[..16]);
        Self(out)
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.as_uuid())
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// One message between two nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// [`CONTROL`] or the protocol's code.
    pub protocol: u8,
    pub session: SessionId,
    /// The protocol round (from `round_based::ProtocolMessage::round`), or 0 for control.
    pub round: u16,
    pub from: NodeId,
    /// `None` for a broadcast to every participant.
    pub to: Option<NodeId>,
    pub payload: Vec<u8>,
}

impl Envelope {
    pub fn is_control(&self) -> bool {
        self.protocol == CONTROL
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.payload.len());
        out.push(VERSION);
        out.push(self.protocol);
        out.extend_from_slice(&self.session.0);
        out.extend_from_slice(&self.round.to_be_bytes());
        out.extend_from_slice(&self.from.get().to_be_bytes());
        out.extend_from_slice(&self.to.map_or(BROADCAST, NodeId::get).to_be_bytes());
        // Payloads are bounded by the frame limit, far below 4 GiB.
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, TransportError> {
        let bad = |m: &str| TransportError::Malformed(m.into());
        if bytes.len() < HEADER {
            return Err(bad("shorter than the envelope header"));
        }
        let (header, payload) = bytes.split_at(HEADER);
        if header[0] != VERSION {
            return Err(TransportError::Malformed(format!(
                "unknown envelope version {}",
                header[0]
            )));
        }
        let u16_at = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
        let mut session = [0u8; 16];
        session.copy_from_slice(&header[2..18]);
        let from = NodeId::new(u16_at(20));
        let to = u16_at(22);
        let len = u32::from_be_bytes([header[24], header[25], header[26], header[27]]) as usize;
        if len != payload.len() {
            return Err(bad("payload length does not match the header"));
        }
        let Some(from) = from else {
            return Err(bad("sender 0 is not a node id"));
        };
        Ok(Self {
            protocol: header[1],
            session: SessionId(session),
            round: u16_at(18),
            from,
            // BROADCAST is 0, the one u16 that is no node id.
            to: NodeId::new(to),
            payload: payload.to_vec(),
        })
    }

    /// Digest of everything but the addressing, for duplicate/equivocation detection.
    pub fn content_digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        Sha256::new()
            .chain_update([self.protocol])
            .chain_update(self.round.to_be_bytes())
            .chain_update(&self.payload)
            .finalize()
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            protocol: 3,
            session: SessionId([9; 16]),
            round: 2,
            from: NodeId::must(4),
            to: Some(NodeId::must(1)),
            payload: b"payload".to_vec(),
        }
    }

    #[test]
    fn round_trips() {
        let e = sample();
        assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
        let b = Envelope {
            to: None,
            ..sample()
        };
        assert_eq!(Envelope::decode(&b.encode()).unwrap().to, None);
    }

    #[test]
    fn refuses_malformed_input() {
        let good = sample().encode();
        // Every truncation, an extra byte, a bad version, sender 0.
        for cut in 0..good.len() {
            assert!(Envelope::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(Envelope::decode(&longer).is_err());
        let mut version = good.clone();
        version[0] = 2;
        assert!(Envelope::decode(&version).is_err());
        // No NodeId is 0, so the sender field is zeroed in the bytes.
        let mut zero_sender = good.clone();
        zero_sender[20..22].copy_from_slice(&[0, 0]);
        assert!(Envelope::decode(&zero_sender).is_err());
        assert!(Envelope::decode(b"garbage bytes that are long enough to be a header").is_err());
    }

    #[test]
    fn sub_sessions_are_distinct_and_deterministic() {
        let s = SessionId([1; 16]);
        assert_eq!(s.derive("input/0"), s.derive("input/0"));
        assert_ne!(s.derive("input/0"), s.derive("input/1"));
        assert_ne!(s.derive("input/0"), s);
    }
}
