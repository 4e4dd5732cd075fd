//! Key handling and sealing: a per-store data-encryption key (DEK) seals every secret; the DEK
//! itself is sealed under a key-encryption key (KEK) from a passphrase or a key file, so
//! changing how the KEK is supplied never re-encrypts the data.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::error::{Result, StoreError};

/// First byte of every sealed value, so the format can change later.
const SEAL_VERSION: u8 = 0x01;
const NONCE_LEN: usize = 24;

/// Argon2id cost for passphrases: 64 MiB, 3 passes, 1 lane (RFC 9106's second recommendation).
pub(crate) const ARGON2_M_KIB: u32 = 64 * 1024;
pub(crate) const ARGON2_T: u32 = 3;
pub(crate) const ARGON2_P: u32 = 1;

/// Where the key-encryption key comes from.
pub enum KeySource {
    /// Stretched with Argon2id; the salt and cost live in the store's `meta` table.
    Passphrase(Zeroizing<String>),
    /// Exactly 32 raw bytes, or 64 hex characters with an optional trailing newline.
    KeyFile(PathBuf),
}

impl KeySource {
    /// The name recorded in `meta`, so opening with the other kind says so instead of failing
    /// later.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            KeySource::Passphrase(_) => "passphrase",
            KeySource::KeyFile(_) => "key-file",
        }
    }
}

// Hand-written so a passphrase can never end up in a log line.
impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Passphrase(_) => f.write_str("Passphrase(<redacted>)"),
            KeySource::KeyFile(path) => f.debug_tuple("KeyFile").field(path).finish(),
        }
    }
}

pub(crate) type Key = Zeroizing<[u8; 32]>;

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    OsRng
        .try_fill_bytes(&mut out)
        .map_err(|e| StoreError::Crypto(format!("the OS random number generator failed: {e}")))?;
    Ok(out)
}

pub(crate) fn random_uuid() -> Result<uuid::Uuid> {
    Ok(uuid::Builder::from_random_bytes(random_bytes()?).into_uuid())
}

/// Writes a new random 32-byte key file readable only by its owner. Refuses to overwrite an
/// existing file: that file may be the only key to a store.
pub fn generate_key_file(path: &Path) -> Result<()> {
    let key: Key = Zeroizing::new(random_bytes()?);
    let io_err = |e: std::io::Error| StoreError::KeyFile {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io_err)?;
    file.write_all(&key[..]).map_err(io_err)?;
    file.sync_all().map_err(io_err)
}

/// Reads a key file: 32 raw bytes, or 64 hex characters plus an optional trailing newline.
pub(crate) fn read_key_file(path: &Path) -> Result<Key> {
    let bad = |reason: String| StoreError::KeyFile {
        path: path.to_owned(),
        reason,
    };
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| bad(e.to_string()))?);
    let mut key: Key = Zeroizing::new([0u8; 32]);
    if bytes.len() == 32 {
        key.copy_from_slice(&bytes);
        return Ok(key);
    }
    let text = bytes
        .strip_suffix(b"\n")
        .map(|t| t.strip_suffix(b"\r").unwrap_or(t))
        .unwrap_or(&bytes);
    if text.len() != 64 {
        return Err(bad(format!(
            "expected 32 raw bytes or 64 hex characters, found {} bytes",
            bytes.len()
        )));
    }
    hex::decode_to_slice(text, &mut key[..])
        .map_err(|_| bad("expected 64 hex characters".into()))?;
    Ok(key)
}

/// Argon2id parameters as recorded in `meta`: "m=65536,t=3,p=1".
pub(crate) fn argon2_params_text() -> String {
    format!("m={ARGON2_M_KIB},t={ARGON2_T},p={ARGON2_P}")
}

fn parse_argon2_params(text: &str) -> Option<Params> {
    let mut m = None;
    let mut t = None;
    let mut p = None;
    for part in text.split(',') {
        let (name, value) = part.split_once('=')?;
        let value: u32 = value.parse().ok()?;
        match name {
            "m" => m = Some(value),
            "t" => t = Some(value),
            "p" => p = Some(value),
            _ => return None,
        }
    }
    Params::new(m?, t?, p?, Some(32)).ok()
}

/// Stretches a passphrase into a KEK. Blocking (64 MiB and ~0.15 s of CPU here): call it off
/// the async runtime.
pub(crate) fn passphrase_kek(passphrase: &str, salt: &[u8], params: &str) -> Result<Key> {
    let params = parse_argon2_params(params)
        .ok_or_else(|| StoreError::Crypto(format!("unusable Argon2 parameters {params:?}")))?;
    let mut memory = Zeroizing::new(vec![Block::default(); params.block_count()]);
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut key: Key = Zeroizing::new([0u8; 32]);
    argon2
        .hash_password_into_with_memory(passphrase.as_bytes(), salt, &mut key[..], &mut memory[..])
        .map_err(|e| StoreError::Crypto(format!("Argon2id: {e}")))?;
    Ok(key)
}

/// XChaCha20-Poly1305 under one key. `sealed = 0x01 || nonce (24) || ciphertext+tag`; the
/// associated data names where the value lives, so a value copied elsewhere fails to open.
pub(crate) struct Sealer(XChaCha20Poly1305);

impl Sealer {
    pub(crate) fn new(key: &Key) -> Result<Self> {
        XChaCha20Poly1305::new_from_slice(&key[..])
            .map(Sealer)
            .map_err(|_| StoreError::Crypto("bad key length".into()))
    }

    pub(crate) fn seal(&self, ad: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let nonce: [u8; NONCE_LEN] = random_bytes()?;
        let payload = Payload {
            msg: plaintext,
            aad: ad.as_bytes(),
        };
        let ciphertext = self
            .0
            .encrypt(&XNonce::from(nonce), payload)
            .map_err(|_| StoreError::Crypto("encryption failed (value too long)".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// `None` if the value is malformed or does not authenticate under this key and `ad`.
    pub(crate) fn open(&self, ad: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let (&version, rest) = sealed.split_first()?;
        if version != SEAL_VERSION || rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let payload = Payload {
            msg: ciphertext,
            aad: ad.as_bytes(),
        };
        self.0
            .decrypt(&XNonce::from(nonce), payload)
            .ok()
            .map(Zeroizing::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_binds_key_and_associated_data() {
        let key: Key = Zeroizing::new([7u8; 32]);
        let sealer = Sealer::new(&key).unwrap();
        let sealed = sealer.seal("t/1/s", b"secret").unwrap();
        assert_eq!(sealed[0], SEAL_VERSION);
        assert_eq!(sealed.len(), 1 + NONCE_LEN + 6 + 16);
        assert_eq!(&sealer.open("t/1/s", &sealed).unwrap()[..], b"secret");
        assert!(sealer.open("t/2/s", &sealed).is_none());
        assert!(Sealer::new(&Zeroizing::new([8u8; 32]))
            .unwrap()
            .open("t/1/s", &sealed)
            .is_none());
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(sealer.open("t/1/s", &flipped).is_none());
        assert!(sealer.open("t/1/s", &sealed[..10]).is_none());
    }

    #[test]
    fn argon2_params_round_trip() {
        let params = parse_argon2_params(&argon2_params_text()).unwrap();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (ARGON2_M_KIB, ARGON2_T, ARGON2_P)
        );
        assert!(parse_argon2_params("m=65536,t=3").is_none());
        assert!(parse_argon2_params("m=65536,t=3,p=1,x=2").is_none());
    }
}
