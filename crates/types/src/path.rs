//! Non-hardened HD derivation paths (BIP-32 / SLIP-10 on secp256k1 agree for these).
//!
//! Threshold keys can only derive non-hardened children: a hardened child needs the parent
//! private key, which no node has. The type lives here, beside the ids, because every layer
//! names a path: the protocols derive with it, the store keeps it in its rows, the API and
//! the CLI take it as an argument.

use serde::{Deserialize, Serialize};
use std::{fmt, str::FromStr};

use crate::ParseError;

/// First hardened index; every index in a path must be below it.
pub const HARDENED: u32 = 0x8000_0000;
/// Longest path we accept; BIP-32 allows 255, wallets here use two levels.
pub const MAX_DEPTH: usize = 16;

/// A non-hardened derivation path relative to the wallet's master key, e.g. `m/0/5`.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DerivationPath(Vec<u32>);

impl DerivationPath {
    /// The master key itself (`m`).
    pub fn root() -> Self {
        Self(Vec::new())
    }

    pub fn new(indices: Vec<u32>) -> Result<Self, ParseError> {
        if indices.len() > MAX_DEPTH {
            return Err(ParseError::Path(format!(
                "depth {} exceeds {MAX_DEPTH}",
                indices.len()
            )));
        }
        if let Some(i) = indices.iter().find(|i| **i >= HARDENED) {
            return Err(ParseError::Path(format!(
                "index {i} is hardened; threshold keys derive only non-hardened children"
            )));
        }
        Ok(Self(indices))
    }

    /// Receive (`chain = 0`) or change (`chain = 1`) address `index`: `m/chain/index`.
    pub fn address(chain: u32, index: u32) -> Result<Self, ParseError> {
        Self::new(vec![chain, index])
    }

    pub fn indices(&self) -> &[u32] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Canonical bytes for binding into execution ids and presignatures.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|i| i.to_be_bytes()).collect()
    }
}

impl fmt::Display for DerivationPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("m")?;
        for i in &self.0 {
            write!(f, "/{i}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DerivationPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for DerivationPath {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix('m')
            .ok_or_else(|| ParseError::Path(format!("{s:?} does not start with 'm'")))?;
        if rest.is_empty() {
            return Ok(Self::root());
        }
        let rest = rest
            .strip_prefix('/')
            .ok_or_else(|| ParseError::Path(format!("{s:?}: expected '/' after 'm'")))?;
        let indices = rest
            .split('/')
            .map(|part| {
                if part.ends_with(['\'', 'h', 'H']) {
                    return Err(ParseError::Path(format!(
                        "{s:?}: hardened step {part:?} is not derivable by a threshold key"
                    )));
                }
                part.parse::<u32>()
                    .map_err(|e| ParseError::Path(format!("{s:?}: {part:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(indices)
    }
}

impl TryFrom<String> for DerivationPath {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DerivationPath> for String {
    fn from(p: DerivationPath) -> String {
        p.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in ["m", "m/0", "m/1/42", "m/0/2147483647"] {
            assert_eq!(s.parse::<DerivationPath>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn refuses_hardened_and_malformed() {
        for s in [
            "",
            "0/1",
            "m/",
            "m//1",
            "m/0'",
            "m/1h",
            "m/2147483648",
            "m/x",
            "m0",
        ] {
            assert!(s.parse::<DerivationPath>().is_err(), "{s} was accepted");
        }
        assert!(DerivationPath::new(vec![0; MAX_DEPTH + 1]).is_err());
    }
}
