//! Envelope signatures with the node's TLS key: ECDSA P-256 over SHA-256, in the fixed
//! 64-byte encoding (`r || s`). mTLS already authenticates a peer to the node it talks to;
//! a signature makes that provable to a third party (another node, an operator), which is
//! what turns blame into evidence.

use ring::{
    rand::SystemRandom,
    signature::{
        EcdsaKeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
    },
};
use rustls_pki_types::{
    alg_id, AlgorithmIdentifier, CertificateDer, InvalidSignature, PrivateKeyDer,
    SignatureVerificationAlgorithm,
};

use crate::{certs::parse_key, TransportError};

/// Length of an envelope signature.
pub const SIGNATURE_LEN: usize = 64;

/// A P-256 ECDSA signature, `r || s` big-endian.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; SIGNATURE_LEN]);

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({})", hex::encode(self.0))
    }
}

/// This node's signing key: the private key of its TLS certificate.
pub struct NodeKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl NodeKey {
    /// The key from its PEM (PKCS#8, as `certs init` writes it). Only P-256 keys sign
    /// envelopes; another key type is refused at start rather than at the first message.
    pub fn from_pem(key_pem: &str) -> Result<Self, TransportError> {
        let key = parse_key(key_pem)?;
        let PrivateKeyDer::Pkcs8(pkcs8) = &key else {
            return Err(TransportError::Tls(
                "the node key must be a PKCS#8 P-256 key (as `certs init` writes it)".into(),
            ));
        };
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| TransportError::Tls(format!("the node key is not a P-256 key: {e}")))?;
        Ok(Self { pair, rng })
    }

    /// Signs `message` (hashed with SHA-256 inside).
    pub fn sign(&self, message: &[u8]) -> Result<Signature, TransportError> {
        let sig = self
            .pair
            .sign(&self.rng, message)
            .map_err(|_| TransportError::Tls("ECDSA signing failed".into()))?;
        let mut out = [0u8; SIGNATURE_LEN];
        let bytes = sig.as_ref();
        if bytes.len() != SIGNATURE_LEN {
            return Err(TransportError::Tls(
                "unexpected ECDSA signature length".into(),
            ));
        }
        out.copy_from_slice(bytes);
        Ok(Signature(out))
    }
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeKey(<omitted>)")
    }
}

/// ECDSA P-256 / SHA-256 with the fixed encoding, for webpki's signature check against a
/// certificate's public key (webpki itself offers only the ASN.1 encoding). webpki checks the
/// certificate's key algorithm (P-256) before calling this.
#[derive(Debug)]
struct P256Fixed;

impl SignatureVerificationAlgorithm for P256Fixed {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public_key)
            .verify(message, signature)
            .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ECDSA_P256
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ECDSA_SHA256
    }
}

/// Whether `signature` over `message` verifies under the public key of `cert` (DER). Says
/// nothing about the certificate itself: the caller knows it from the TLS handshake, or checks
/// its chain (evidence).
pub fn verify(cert: &CertificateDer<'_>, message: &[u8], signature: &Signature) -> bool {
    webpki::EndEntityCert::try_from(cert)
        .and_then(|c| c.verify_signature(&P256Fixed, message, &signature.0))
        .is_ok()
}
