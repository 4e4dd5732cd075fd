//! Signing a PSBT in one process with every party's share: the demo, the tests and the
//! baseline benchmarks. A node does the same per input over the network.

use bitcoin::psbt::Psbt;
use mpc_protocols::{ecdsa::EcdsaKeyShare, local, schnorr::SchnorrKeyShare, PartyIndex};

use crate::{
    finalize::{insert_signature, InputSignature},
    psbt::{analyze, JobMessage, SigningJob},
    WalletError, WalletKey,
};

/// A wallet with all of its shares in this process.
pub enum LocalWallet<'a> {
    Ecdsa {
        key: &'a WalletKey,
        shares: &'a [EcdsaKeyShare],
    },
    Schnorr {
        key: &'a WalletKey,
        shares: &'a [SchnorrKeyShare],
    },
}

impl LocalWallet<'_> {
    fn key(&self) -> &WalletKey {
        match self {
            LocalWallet::Ecdsa { key, .. } | LocalWallet::Schnorr { key, .. } => key,
        }
    }
}

/// How ECDSA inputs are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcdsaMode {
    /// Presignature for (key, path, signers) first, then online signing.
    Presignature,
    /// Full interactive signing.
    Interactive,
}

/// Analyzes `psbt` against `wallets`, signs every input with `signers`, verifies each
/// signature and inserts it. Returns the jobs with their signatures, in input order.
pub fn sign_psbt(
    psbt: &mut Psbt,
    wallets: &[LocalWallet<'_>],
    signers: &[PartyIndex],
    mode: EcdsaMode,
) -> Result<Vec<(SigningJob, InputSignature)>, WalletError> {
    let keys: Vec<&WalletKey> = wallets.iter().map(LocalWallet::key).collect();
    let jobs = analyze(psbt, &keys, &crate::TxRules::default())?;
    let mut signed = Vec::with_capacity(jobs.len());
    for job in jobs {
        let signature = match (&wallets[job.wallet], &job.message) {
            (LocalWallet::Ecdsa { shares, .. }, JobMessage::Ecdsa { preimage, .. }) => {
                InputSignature::Ecdsa(match mode {
                    EcdsaMode::Presignature => {
                        let presigs = local::presign(shares, signers, &job.path)?;
                        local::sign_with_presignatures(shares, presigs, preimage)?
                    }
                    EcdsaMode::Interactive => {
                        local::ecdsa_sign(shares, signers, &job.path, preimage)?
                    }
                })
            }
            (LocalWallet::Schnorr { shares, .. }, JobMessage::Schnorr { sighash, .. }) => {
                InputSignature::Schnorr(local::schnorr_sign(shares, signers, &job.path, sighash)?)
            }
            _ => {
                return Err(WalletError::Signature {
                    input: job.input,
                    reason: "wallet scheme does not match the input".into(),
                })
            }
        };
        insert_signature(psbt, &job, &signature)?;
        signed.push((job, signature));
    }
    Ok(signed)
}
