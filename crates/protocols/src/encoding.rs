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
    check_radixes(bytes)?;
    ciborium::from_reader(bytes).map_err(|e| ProtocolError::Encoding(e.to_string()))
}

/// The radixes num-bigint parses digits in without panicking.
const RADIXES: std::ops::RangeInclusive<i128> = 2..=36;

/// Big integers (fast-paillier's, inside every cggmp24 message) decode from `{radix, value}`
/// maps, and num-bigint panics on a radix outside 2..=36 (fast-paillier only ever writes 16).
/// A peer's message with another radix would panic the receiving node's protocol thread
/// (found by the adversary harness, issue 18): refused here instead, as malformed.
fn check_radixes(bytes: &[u8]) -> Result<(), ProtocolError> {
    use ciborium::Value;
    fn walk(v: &Value) -> Result<(), ProtocolError> {
        match v {
            Value::Map(entries) => entries.iter().try_for_each(|(k, v)| {
                if k.as_text() == Some("radix") {
                    if let Some(radix) = v.as_integer().map(i128::from) {
                        if !RADIXES.contains(&radix) {
                            return Err(ProtocolError::Encoding(format!(
                                "a number in radix {radix}"
                            )));
                        }
                    }
                }
                walk(v)
            }),
            Value::Array(items) => items.iter().try_for_each(walk),
            Value::Tag(_, inner) => walk(inner),
            _ => Ok(()),
        }
    }
    let value: Value =
        ciborium::from_reader(bytes).map_err(|e| ProtocolError::Encoding(e.to_string()))?;
    walk(&value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer's number in radix 0 or 37 is an error, not num-bigint's panic; radix 16 (what
    /// fast-paillier writes) and any other valid radix decode.
    #[test]
    fn a_number_in_a_radix_num_bigint_refuses_is_an_error_not_a_panic() {
        #[derive(serde::Serialize)]
        struct Dict {
            radix: u16,
            value: &'static str,
        }
        type Number = cggmp24::fast_paillier::backend::Integer;
        let wrapped = |radix| encode(&vec![Dict { radix, value: "ff" }]).unwrap();
        let ok: Vec<Number> = decode(&wrapped(16)).unwrap();
        assert_eq!(ok[0], Number::from_bytes_msf(&[0xff]));
        assert!(decode::<Vec<Number>>(&wrapped(36)).is_ok());
        for radix in [0, 1, 37, u16::MAX] {
            assert!(decode::<Vec<Number>>(&wrapped(radix)).is_err(), "{radix}");
        }
    }
}
