//! A wallet's public side: its xpub, HD addresses and watch-only descriptors.
//!
//! Derivation here uses rust-bitcoin's BIP-32, independently of the protocol crates' SLIP-10;
//! tests check that both give the same child keys.

use std::str::FromStr;

use bitcoin::{
    bip32::{ChainCode, ChildNumber, Fingerprint, Xpub},
    key::CompressedPublicKey,
    secp256k1::{self, XOnlyPublicKey},
    Address, Network, NetworkKind, ScriptBuf,
};
use miniscript::descriptor::{Descriptor, DescriptorPublicKey};
use mpc_protocols::{signature::PublicKey, DerivationPath};
use serde::{Deserialize, Serialize};

use crate::WalletError;

// Shared with the store and the API, which name schemes too.
pub use mpc_types::Scheme;

/// Receive (`m/0/i`) or change (`m/1/i`) addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Chain {
    Receive = 0,
    Change = 1,
}

impl Chain {
    pub fn index(self) -> u32 {
        self as u32
    }

    pub fn path(self, index: u32) -> Result<DerivationPath, WalletError> {
        DerivationPath::address(self.index(), index)
            .map_err(|e| WalletError::InvalidPath(e.to_string()))
    }
}

impl FromStr for Chain {
    type Err = WalletError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "receive" | "0" => Ok(Chain::Receive),
            "change" | "1" => Ok(Chain::Change),
            other => Err(WalletError::InvalidPath(format!(
                "unknown chain {other:?} (expected receive or change)"
            ))),
        }
    }
}

/// Everything public about one wallet: enough to derive addresses and check PSBT inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletKey {
    pub scheme: Scheme,
    /// Master public key (compressed; for Schnorr wallets the untweaked internal key).
    pub master_key: PublicKey,
    #[serde(with = "hex::serde")]
    pub chain_code: [u8; 32],
    pub network: Network,
}

impl WalletKey {
    pub fn new(
        scheme: Scheme,
        master_key: PublicKey,
        chain_code: [u8; 32],
        network: Network,
    ) -> Result<Self, WalletError> {
        let key = Self {
            scheme,
            master_key,
            chain_code,
            network,
        };
        key.master_secp()?;
        Ok(key)
    }

    fn master_secp(&self) -> Result<secp256k1::PublicKey, WalletError> {
        secp256k1::PublicKey::from_slice(&self.master_key.0)
            .map_err(|e| WalletError::InvalidKey(e.to_string()))
    }

    /// The master extended public key (depth 0). Its fingerprint identifies the wallet in
    /// PSBT derivation records.
    pub fn xpub(&self) -> Result<Xpub, WalletError> {
        Ok(Xpub {
            network: NetworkKind::from(self.network),
            depth: 0,
            parent_fingerprint: Fingerprint::default(),
            child_number: ChildNumber::from_normal_idx(0)
                .map_err(|e| WalletError::InvalidKey(e.to_string()))?,
            public_key: self.master_secp()?,
            chain_code: ChainCode::from(self.chain_code),
        })
    }

    pub fn fingerprint(&self) -> Result<Fingerprint, WalletError> {
        Ok(self.xpub()?.fingerprint())
    }

    /// The (internal, for Schnorr) public key at `path`.
    pub fn derive(&self, path: &DerivationPath) -> Result<secp256k1::PublicKey, WalletError> {
        let steps = to_bip32(path)?;
        let child = self
            .xpub()?
            .derive_pub(crate::secp(), &steps)
            .map_err(|e| WalletError::InvalidPath(format!("{path}: {e}")))?;
        Ok(child.public_key)
    }

    /// The output script paid to at `path`: P2WPKH or P2TR (empty script tree).
    pub fn script_pubkey(&self, path: &DerivationPath) -> Result<ScriptBuf, WalletError> {
        Ok(self.address(path)?.script_pubkey())
    }

    pub fn address(&self, path: &DerivationPath) -> Result<Address, WalletError> {
        Ok(self.address_of(self.derive(path)?))
    }

    /// The address paying to `key`, a key this wallet derived (for Schnorr, the internal key).
    pub fn address_of(&self, key: secp256k1::PublicKey) -> Address {
        match self.scheme {
            Scheme::Ecdsa => Address::p2wpkh(&CompressedPublicKey(key), self.network),
            Scheme::Schnorr => {
                Address::p2tr(crate::secp(), XOnlyPublicKey::from(key), None, self.network)
            }
        }
    }

    /// Address `index` on `chain`.
    pub fn chain_address(&self, chain: Chain, index: u32) -> Result<Address, WalletError> {
        self.address(&chain.path(index)?)
    }

    /// The watch-only descriptor for `chain`, e.g. `wpkh([fp]xpub/0/*)#checksum`, with the
    /// checksum computed by the miniscript crate.
    pub fn descriptor(&self, chain: Chain) -> Result<Descriptor<DescriptorPublicKey>, WalletError> {
        let xpub = self.xpub()?;
        let fingerprint = xpub.fingerprint();
        let body = match self.scheme {
            Scheme::Ecdsa => format!("wpkh([{fingerprint}]{xpub}/{}/*)", chain.index()),
            Scheme::Schnorr => format!("tr([{fingerprint}]{xpub}/{}/*)", chain.index()),
        };
        Descriptor::from_str(&body).map_err(|e| WalletError::Descriptor(e.to_string()))
    }
}

pub(crate) fn to_bip32(path: &DerivationPath) -> Result<Vec<ChildNumber>, WalletError> {
    path.indices()
        .iter()
        .map(|i| {
            ChildNumber::from_normal_idx(*i).map_err(|e| WalletError::InvalidPath(e.to_string()))
        })
        .collect()
}

/// Converts a BIP-32 path from a PSBT into ours; hardened steps are refused.
pub(crate) fn from_bip32(path: &bitcoin::bip32::DerivationPath) -> Result<DerivationPath, String> {
    let indices = path
        .into_iter()
        .map(|c| match c {
            ChildNumber::Normal { index } => Ok(*index),
            ChildNumber::Hardened { index } => Err(format!(
                "hardened step {index}' cannot be derived by a threshold key"
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    DerivationPath::new(indices).map_err(|e| e.to_string())
}
