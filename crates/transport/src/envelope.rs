//! The envelope: `{version, protocol, session, round, from, to | broadcast, payload}` in a
//! fixed big-endian header, the payload, then the sender's signature (64 bytes, ECDSA P-256
//! with its node key) over a domain-separated digest of everything before it. Decoding
//! checks every length; anything malformed is an error, never a panic. Decoding does not
//! check the signature (it has no keys): the transport does, with the sender's certificate,
//! before the router sees the envelope ([`Envelope::verify`]).

use rustls_pki_types::CertificateDer;

use crate::{
    signing::{self, NodeKey, Signature, SIGNATURE_LEN},
    NodeId, TransportError,
};

/// Envelope format version; a node refuses versions it does not know. Version 2 added the
/// signature; version 1 (unsigned) is refused.
pub const VERSION: u8 = 2;
/// Prefix of the signed message: a signature over an envelope is never valid for anything
/// else the node key signs (TLS handshakes sign their own context strings).
const SIGNING_LABEL: &[u8] = b"mpc-wallet/envelope/v2\0";
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
    /// The sender's signature: set on every envelope decoded from the wire (checked by the
    /// transport against the sender's certificate before the router sees it) and by
    /// [`Envelope::sign`]. Ignored when sending: the transport signs with its own key.
    pub signature: Option<Signature>,
}

impl Envelope {
    pub fn is_control(&self) -> bool {
        self.protocol == CONTROL
    }

    /// The wire bytes: [`Self::signed_bytes`] then the signature. An unsigned envelope is
    /// written with 64 zero bytes, which never verify (ECDSA's `r` and `s` are nonzero).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.signed_bytes();
        out.extend_from_slice(&self.signature.map_or([0; SIGNATURE_LEN], |s| s.0));
        out
    }

    /// Signs this envelope with `key` (the sender's node key).
    pub fn sign(&mut self, key: &NodeKey) -> Result<(), TransportError> {
        self.signature = Some(key.sign(&self.signing_message())?);
        Ok(())
    }

    /// This envelope signed with `key`.
    pub fn signed(mut self, key: &NodeKey) -> Result<Self, TransportError> {
        self.sign(key)?;
        Ok(self)
    }

    /// Checks that the signature verifies under `cert`'s public key (`cert`: the sender's
    /// certificate, DER). The caller vouches that `cert` is the sender's, e.g. from the TLS
    /// handshake of the connection it came on. A missing or bad signature is
    /// [`TransportError::BadSignature`], naming the envelope's sender.
    pub fn verify(&self, cert: &CertificateDer<'_>) -> Result<(), TransportError> {
        match &self.signature {
            Some(sig) if signing::verify(cert, &self.signing_message(), sig) => Ok(()),
            _ => Err(TransportError::BadSignature(self.from)),
        }
    }

    /// What the signature covers: a fixed label, then the header (version, protocol, session,
    /// round, from, to, payload length) and the payload, exactly as on the wire.
    fn signing_message(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SIGNING_LABEL.len() + HEADER + self.payload.len());
        out.extend_from_slice(SIGNING_LABEL);
        self.write_body(&mut out);
        out
    }

    /// The header and payload, the part of the wire bytes the signature covers (without the
    /// label).
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.payload.len() + SIGNATURE_LEN);
        self.write_body(&mut out);
        out
    }

    fn write_body(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.push(self.protocol);
        out.extend_from_slice(&self.session.0);
        out.extend_from_slice(&self.round.to_be_bytes());
        out.extend_from_slice(&self.from.get().to_be_bytes());
        out.extend_from_slice(&self.to.map_or(BROADCAST, NodeId::get).to_be_bytes());
        // Payloads are bounded by the frame limit, far below 4 GiB.
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// Decodes wire bytes (version 2, signed). The signature is read, not checked.
    pub fn decode(bytes: &[u8]) -> Result<Self, TransportError> {
        let bad = |m: &str| TransportError::Malformed(m.into());
        if let Some(&version) = bytes.first().filter(|v| **v != VERSION) {
            return Err(TransportError::Malformed(format!(
                "unknown envelope version {version}"
            )));
        }
        if bytes.len() < HEADER + SIGNATURE_LEN {
            return Err(bad("shorter than the envelope header and signature"));
        }
        let (body, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let (header, payload) = body.split_at(HEADER);
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
            signature: signature.try_into().ok().map(Signature),
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
    use crate::certs::{parse_certs, ClusterCa};

    /// Nodes 4 and 1's keys and certificates from one CA.
    fn keys() -> [(NodeKey, CertificateDer<'static>); 2] {
        let ca = ClusterCa::generate("test", 1).unwrap();
        [4, 1].map(|id| {
            let c = ca
                .issue_node(NodeId::must(id), &[], time::OffsetDateTime::now_utc(), 1)
                .unwrap();
            let cert = parse_certs(&c.cert_pem).unwrap().remove(0);
            (NodeKey::from_pem(&c.key_pem).unwrap(), cert)
        })
    }

    fn sample() -> Envelope {
        Envelope {
            protocol: 3,
            session: SessionId([9; 16]),
            round: 2,
            from: NodeId::must(4),
            to: Some(NodeId::must(1)),
            payload: b"payload".to_vec(),
            signature: None,
        }
    }

    #[test]
    fn round_trips_signed() {
        let [(key, cert), _] = keys();
        let e = sample().signed(&key).unwrap();
        let decoded = Envelope::decode(&e.encode()).unwrap();
        assert_eq!(decoded, e);
        decoded.verify(&cert).unwrap();
        let b = Envelope {
            to: None,
            ..sample()
        }
        .signed(&key)
        .unwrap();
        let decoded = Envelope::decode(&b.encode()).unwrap();
        assert_eq!(decoded.to, None);
        decoded.verify(&cert).unwrap();
    }

    #[test]
    fn refuses_malformed_input() {
        let [(key, _), _] = keys();
        let good = sample().signed(&key).unwrap().encode();
        // Every truncation, an extra byte, a bad version, sender 0.
        for cut in 0..good.len() {
            assert!(Envelope::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(Envelope::decode(&longer).is_err());
        for version in [0, 1, 3] {
            let mut v = good.clone();
            v[0] = version;
            assert!(Envelope::decode(&v).is_err(), "version {version}");
        }
        // A version-1 (unsigned) envelope as that version wrote it.
        let mut v1 = sample().signed_bytes();
        v1[0] = 1;
        assert!(Envelope::decode(&v1).is_err());
        // No NodeId is 0, so the sender field is zeroed in the bytes.
        let mut zero_sender = good.clone();
        zero_sender[20..22].copy_from_slice(&[0, 0]);
        assert!(Envelope::decode(&zero_sender).is_err());
        assert!(Envelope::decode(b"garbage bytes that are long enough to be a header").is_err());
    }

    /// Issue 18 (a): one flipped bit anywhere (header, payload, signature) and the envelope
    /// no longer verifies under its sender's certificate; an unsigned one never does.
    #[test]
    fn every_flipped_bit_breaks_the_signature() {
        let [(key, cert), _] = keys();
        let good = sample().signed(&key).unwrap().encode();
        Envelope::decode(&good).unwrap().verify(&cert).unwrap();
        for bit in 0..good.len() * 8 {
            let mut bytes = good.clone();
            bytes[bit / 8] ^= 1 << (bit % 8);
            if let Ok(e) = Envelope::decode(&bytes) {
                let err = e.verify(&cert).unwrap_err();
                assert!(
                    matches!(err, TransportError::BadSignature(_)),
                    "bit {bit}: {err}"
                );
            }
        }
        let unsigned = Envelope::decode(&sample().encode()).unwrap();
        assert!(unsigned.verify(&cert).is_err(), "zero signature");
        assert!(sample().verify(&cert).is_err(), "no signature");
    }

    /// Issue 18 (b): node 1 cannot make an envelope that verifies as node 4's: signed with
    /// its own key and `from` set to node 4, it fails under node 4's certificate.
    #[test]
    fn a_node_cannot_sign_as_another() {
        let [(_, cert4), (key1, cert1)] = keys();
        let forged = sample().signed(&key1).unwrap();
        assert_eq!(forged.from, NodeId::must(4));
        let decoded = Envelope::decode(&forged.encode()).unwrap();
        assert!(matches!(
            decoded.verify(&cert4),
            Err(TransportError::BadSignature(n)) if n == NodeId::must(4)
        ));
        // It verifies only under node 1's own certificate, and the transport refuses it there
        // because its sender field is not the connection's node (router: impersonation).
        decoded.verify(&cert1).unwrap();
    }

    #[test]
    fn the_signature_is_not_part_of_the_content() {
        let [(key, _), _] = keys();
        // ECDSA signatures are randomized: two signings of one message are duplicates, not
        // equivocation, for the router.
        let a = sample().signed(&key).unwrap();
        let b = sample().signed(&key).unwrap();
        assert_ne!(a.signature, b.signature);
        assert_eq!(a.content_digest(), b.content_digest());
    }

    #[test]
    fn sub_sessions_are_distinct_and_deterministic() {
        let s = SessionId([1; 16]);
        assert_eq!(s.derive("input/0"), s.derive("input/0"));
        assert_ne!(s.derive("input/0"), s.derive("input/1"));
        assert_ne!(s.derive("input/0"), s);
    }
}
