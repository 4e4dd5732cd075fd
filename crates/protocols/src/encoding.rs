//! One binary encoding (CBOR) for key material and protocol messages.
//!
//! CBOR is self-describing, which the protocol crates' serde impls need (they use untagged and
//! map-shaped representations), and it is compact enough for the largest aux-info message.

use serde::{de::DeserializeOwned, Serialize};
use zeroize::Zeroizing;

use crate::ProtocolError;

/// Encodes a value. Secret values must use [`encode_secret`] so the buffer is wiped on drop.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(|e| ProtocolError::Encoding(e.to_string()))?;
    Ok(out)
}

/// Encodes a secret value into a buffer that is zeroized when dropped.
pub fn encode_secret<T: Serialize>(value: &T) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
    let mut out = Zeroizing::new(Vec::new());
    ciborium::into_writer(value, &mut *out).map_err(|e| ProtocolError::Encoding(e.to_string()))?;
    Ok(out)
}

/// Decodes a value; any malformed input is an error, never a panic.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtocolError> {
    ciborium::from_reader(bytes).map_err(|e| ProtocolError::Encoding(e.to_string()))
}
