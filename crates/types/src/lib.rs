//! The identifiers shared by every crate, each its own type so that they cannot mix silently.
//!
//! * [`NodeId`]: a node in the cluster config, 1-based (the transport's and the store's id).
//! * [`PartyIndex`]: a party's index inside a protocol run, 0-based.
//! * [`WalletId`]: a wallet, as the store and the API name it.
//! * [`Scheme`]: the two signature schemes.
//!
//! A node's party index is its position in the sorted participant (or signer) list that
//! the run is over: [`party_index`] and [`node_at`] are the only conversions between the two.
//! Every type serializes as its bare number or text, so wire formats, JSON and database
//! columns are what they were when these were plain `u16`s and `String`s.

use std::{fmt, num::NonZeroU16, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value that does not parse as one of these types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("node id {0:?} is not a number from 1 to 65535")]
    NodeId(String),
    #[error("party index {0:?} is not a number from 0 to 65535")]
    PartyIndex(String),
    #[error("a wallet id must not be empty")]
    EmptyWalletId,
    #[error("unknown scheme {0:?} (expected cggmp24 or frost)")]
    Scheme(String),
    #[error("unknown network {0:?} (expected mainnet, testnet, signet or regtest)")]
    Network(String),
    #[error("invalid derivation path: {0}")]
    Path(String),
}

mod path;
pub use path::{DerivationPath, HARDENED, MAX_DEPTH};

/// A node's id in the cluster config (1-based; the certificate names it `node-<id>`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(NonZeroU16);

impl NodeId {
    /// `None` for 0, which is no node's id.
    pub const fn new(id: u16) -> Option<Self> {
        match NonZeroU16::new(id) {
            Some(id) => Some(Self(id)),
            None => None,
        }
    }

    /// For ids written in the source (tests, defaults); panics on 0, which is a bug there.
    pub const fn must(id: u16) -> Self {
        match Self::new(id) {
            Some(id) => id,
            None => panic!("node ids start at 1"),
        }
    }

    pub const fn get(self) -> u16 {
        self.0.get()
    }

    /// Ids written in the source (tests, defaults); panics on 0, as [`NodeId::must`] does.
    pub fn must_list(ids: &[u16]) -> Vec<NodeId> {
        ids.iter().map(|id| Self::must(*id)).collect()
    }
}

impl TryFrom<u16> for NodeId {
    type Error = ParseError;
    fn try_from(id: u16) -> Result<Self, ParseError> {
        Self::new(id).ok_or_else(|| ParseError::NodeId(id.to_string()))
    }
}

impl From<NodeId> for u16 {
    fn from(id: NodeId) -> u16 {
        id.get()
    }
}

impl FromStr for NodeId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        s.parse::<u16>()
            .ok()
            .and_then(Self::new)
            .ok_or_else(|| ParseError::NodeId(s.to_owned()))
    }
}

// Debug is the bare number too: error messages list signer sets as `[1, 2]`, as before.
impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.get(), f)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.get(), f)
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.get())
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let id = u16::deserialize(d)?;
        Self::new(id).ok_or_else(|| serde::de::Error::custom("node ids start at 1"))
    }
}

/// A party's index inside a protocol run (0-based), as the protocol libraries number them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PartyIndex(u16);

impl PartyIndex {
    pub const fn new(index: u16) -> Self {
        Self(index)
    }

    pub const fn get(self) -> u16 {
        self.0
    }

    pub const fn as_usize(self) -> usize {
        self.0 as usize
    }

    /// Indices written in the source (tests).
    pub fn list(indices: &[u16]) -> Vec<PartyIndex> {
        indices.iter().copied().map(PartyIndex).collect()
    }

    /// The first `n` indices, `0..n`: every party of an `n`-party run.
    pub fn all(n: u16) -> Vec<PartyIndex> {
        (0..n).map(PartyIndex).collect()
    }
}

impl From<PartyIndex> for u16 {
    fn from(index: PartyIndex) -> u16 {
        index.0
    }
}

impl FromStr for PartyIndex {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        s.parse::<u16>()
            .map(PartyIndex)
            .map_err(|_| ParseError::PartyIndex(s.to_owned()))
    }
}

impl fmt::Debug for PartyIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Display for PartyIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for PartyIndex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0)
    }
}

impl<'de> Deserialize<'de> for PartyIndex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u16::deserialize(d).map(PartyIndex)
    }
}

/// The party index of `node` in a run over `nodes`: its position in that list (the wallet's
/// participants for key generation, the sorted signer set for signing). `None` if it is not
/// in the list.
pub fn party_index(nodes: &[NodeId], node: NodeId) -> Option<PartyIndex> {
    let position = nodes.iter().position(|n| *n == node)?;
    // Lists of node ids are at most u16::MAX long: ids are distinct u16s.
    u16::try_from(position).ok().map(PartyIndex)
}

/// The node at party index `index` of a run over `nodes`, the inverse of [`party_index`].
pub fn node_at(nodes: &[NodeId], index: PartyIndex) -> Option<NodeId> {
    nodes.get(index.as_usize()).copied()
}

/// A wallet's id. The cluster makes them as UUID strings; any non-empty text that a store or
/// backup already holds is kept as it is.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct WalletId(String);

impl WalletId {
    pub fn new(id: impl Into<String>) -> Result<Self, ParseError> {
        let id = id.into();
        if id.is_empty() {
            return Err(ParseError::EmptyWalletId);
        }
        Ok(Self(id))
    }

    /// The id of a wallet the cluster makes now (a UUID, never empty).
    pub fn from_uuid(id: uuid::Uuid) -> Self {
        Self(id.to_string())
    }

    /// For ids written in the source (tests, examples); panics on an empty one, a bug there.
    pub fn must(id: &str) -> Self {
        match Self::new(id) {
            Ok(id) => id,
            Err(e) => panic!("{e}"),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl FromStr for WalletId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Self::new(s)
    }
}

impl AsRef<str> for WalletId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for WalletId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for WalletId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for WalletId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Debug for WalletId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for WalletId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for WalletId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// What an approver says about a request waiting for approvals. A rejection is signed too,
/// and never counts as an approval: the decision is part of the signed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }

    pub fn parse(text: &str) -> Option<Decision> {
        [Decision::Approve, Decision::Reject]
            .into_iter()
            .find(|d| d.as_str() == text)
    }
}

/// The two signature schemes, each with its own keys. Named by protocol (`cggmp24`, `frost`)
/// in the API, the CLI and the store; `ecdsa` and `schnorr` are accepted on input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scheme {
    /// Threshold ECDSA by CGGMP24; spends P2WPKH (segwit v0) outputs.
    #[serde(rename = "cggmp24", alias = "ecdsa")]
    Ecdsa,
    /// FROST Schnorr (BIP-340); spends key-path P2TR outputs.
    #[serde(rename = "frost", alias = "schnorr")]
    Schnorr,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Ecdsa => "cggmp24",
            Scheme::Schnorr => "frost",
        }
    }

    /// The output type this scheme's wallets receive to.
    pub fn script_type(self) -> &'static str {
        match self {
            Scheme::Ecdsa => "p2wpkh",
            Scheme::Schnorr => "p2tr",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scheme {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "cggmp24" | "ecdsa" => Ok(Scheme::Ecdsa),
            "frost" | "schnorr" => Ok(Scheme::Schnorr),
            other => Err(ParseError::Scheme(other.to_owned())),
        }
    }
}

/// The networks this product signs for, by the names the CLI, the API, the config and the
/// store use (`bitcoin` is accepted for mainnet, as rust-bitcoin spells it). rust-bitcoin's
/// `Network` is only met where addresses and keys are made (`bitcoin::Network::from`): it has
/// networks we do not serve (testnet4) and may grow more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    #[serde(alias = "bitcoin")]
    Mainnet,
    Testnet,
    Signet,
    Regtest,
}

impl Network {
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Mainnet => "mainnet",
            Network::Testnet => "testnet",
            Network::Signet => "signet",
            Network::Regtest => "regtest",
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Network {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "mainnet" | "bitcoin" => Ok(Network::Mainnet),
            "testnet" => Ok(Network::Testnet),
            "signet" => Ok(Network::Signet),
            "regtest" => Ok(Network::Regtest),
            other => Err(ParseError::Network(other.to_owned())),
        }
    }
}

impl TryFrom<bitcoin::Network> for Network {
    type Error = ParseError;
    fn try_from(network: bitcoin::Network) -> Result<Self, ParseError> {
        match network {
            bitcoin::Network::Bitcoin => Ok(Network::Mainnet),
            bitcoin::Network::Testnet => Ok(Network::Testnet),
            bitcoin::Network::Signet => Ok(Network::Signet),
            bitcoin::Network::Regtest => Ok(Network::Regtest),
            other => Err(ParseError::Network(other.to_string())),
        }
    }
}

impl From<Network> for bitcoin::Network {
    fn from(network: Network) -> Self {
        match network {
            Network::Mainnet => bitcoin::Network::Bitcoin,
            Network::Testnet => bitcoin::Network::Testnet,
            Network::Signet => bitcoin::Network::Signet,
            Network::Regtest => bitcoin::Network::Regtest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_one_based_and_serialize_as_numbers() {
        assert_eq!(NodeId::new(0), None);
        assert_eq!("0".parse::<NodeId>(), Err(ParseError::NodeId("0".into())));
        assert!("x".parse::<NodeId>().is_err());
        assert!("70000".parse::<NodeId>().is_err());
        let id: NodeId = "3".parse().unwrap();
        assert_eq!(id.get(), 3);
        assert_eq!(format!("{id} {id:?} {:?}", vec![id]), "3 3 [3]");
        assert_eq!(serde_json::to_string(&id).unwrap(), "3");
        assert_eq!(serde_json::from_str::<NodeId>("3").unwrap(), id);
        assert!(serde_json::from_str::<NodeId>("0").is_err());
    }

    #[test]
    fn party_index_is_the_position_in_the_list() {
        let nodes = [NodeId::must(2), NodeId::must(3), NodeId::must(5)];
        assert_eq!(
            party_index(&nodes, NodeId::must(3)),
            Some(PartyIndex::new(1))
        );
        assert_eq!(party_index(&nodes, NodeId::must(1)), None);
        assert_eq!(node_at(&nodes, PartyIndex::new(2)), Some(NodeId::must(5)));
        assert_eq!(node_at(&nodes, PartyIndex::new(3)), None);
        assert_eq!(serde_json::to_string(&PartyIndex::new(4)).unwrap(), "4");
        assert_eq!(
            PartyIndex::all(3),
            vec![PartyIndex::new(0), PartyIndex::new(1), PartyIndex::new(2)]
        );
    }

    #[test]
    fn wallet_ids_keep_their_text() {
        let id: WalletId = serde_json::from_str("\"2f1c\"").unwrap();
        assert_eq!(id.as_str(), "2f1c");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"2f1c\"");
        assert!(serde_json::from_str::<WalletId>("\"\"").is_err());
    }

    #[test]
    fn schemes_by_protocol_name_with_aliases() {
        assert_eq!("ecdsa".parse::<Scheme>().unwrap(), Scheme::Ecdsa);
        assert_eq!("frost".parse::<Scheme>().unwrap(), Scheme::Schnorr);
        assert!("rsa".parse::<Scheme>().is_err());
        assert_eq!(
            serde_json::to_string(&Scheme::Ecdsa).unwrap(),
            "\"cggmp24\""
        );
        assert_eq!(
            serde_json::from_str::<Scheme>("\"schnorr\"").unwrap(),
            Scheme::Schnorr
        );
    }

    #[test]
    fn networks_by_our_names_in_and_out() {
        for (name, network) in [
            ("mainnet", Network::Mainnet),
            ("testnet", Network::Testnet),
            ("signet", Network::Signet),
            ("regtest", Network::Regtest),
        ] {
            assert_eq!(name.parse::<Network>().unwrap(), network);
            assert_eq!(network.to_string(), name);
            let json = format!("\"{name}\"");
            assert_eq!(serde_json::to_string(&network).unwrap(), json);
            assert_eq!(serde_json::from_str::<Network>(&json).unwrap(), network);
        }
        assert_eq!("bitcoin".parse::<Network>().unwrap(), Network::Mainnet);
        assert_eq!(
            serde_json::from_str::<Network>("\"bitcoin\"").unwrap(),
            Network::Mainnet
        );
        assert!("Regtest".parse::<Network>().is_err());
        assert!(serde_json::from_str::<Network>("\"litecoin\"").is_err());
        assert_eq!(
            bitcoin::Network::from(Network::Mainnet),
            bitcoin::Network::Bitcoin
        );
    }
}
