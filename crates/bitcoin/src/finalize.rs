//! Putting signatures into a PSBT, finalizing it and extracting the transaction.

use bitcoin::{psbt::Psbt, Transaction};
use miniscript::psbt::PsbtExt;
use mpc_protocols::signature::{EcdsaSignature, SchnorrSignature};

use crate::{
    psbt::{verify_job_signature, JobMessage, SigningJob},
    WalletError,
};

/// A finished signature for one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputSignature {
    Ecdsa(EcdsaSignature),
    Schnorr(SchnorrSignature),
}

/// Verifies `signature` against the job's key and sighash (libsecp256k1), then records it in
/// the PSBT input (`partial_sigs` for P2WPKH, `tap_key_sig` for P2TR).
pub fn insert_signature(
    psbt: &mut Psbt,
    job: &SigningJob,
    signature: &InputSignature,
) -> Result<(), WalletError> {
    let bad = |reason: String| WalletError::Signature {
        input: job.input,
        reason,
    };
    verify_job_signature(job, signature).map_err(bad)?;
    let input = psbt
        .inputs
        .get_mut(job.input)
        .ok_or_else(|| bad("no such input".into()))?;
    match (&job.message, signature) {
        (
            JobMessage::Ecdsa {
                sighash_type,
                public_key,
                ..
            },
            InputSignature::Ecdsa(sig),
        ) => {
            let signature = bitcoin::secp256k1::ecdsa::Signature::from_compact(&sig.to_compact())
                .map_err(|e| bad(e.to_string()))?;
            input.partial_sigs.insert(
                bitcoin::PublicKey::new(*public_key),
                bitcoin::ecdsa::Signature {
                    signature,
                    sighash_type: *sighash_type,
                },
            );
        }
        (
            JobMessage::Schnorr {
                sighash_type,
                internal_key,
                ..
            },
            InputSignature::Schnorr(sig),
        ) => {
            let signature = bitcoin::secp256k1::schnorr::Signature::from_slice(&sig.to_bytes())
                .map_err(|e| bad(e.to_string()))?;
            input.tap_internal_key = Some(*internal_key);
            input.tap_key_sig = Some(bitcoin::taproot::Signature {
                signature,
                sighash_type: *sighash_type,
            });
        }
        _ => return Err(bad("signature scheme does not match the input".into())),
    }
    Ok(())
}

/// Finalizes every input (miniscript's finalizer, which also runs its own interpreter over
/// the satisfaction) and extracts the network transaction.
pub fn finalize(psbt: &mut Psbt) -> Result<Transaction, WalletError> {
    psbt.finalize_mut(crate::secp()).map_err(|errors| {
        WalletError::Finalize(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    psbt.clone()
        .extract_tx()
        .map_err(|e| WalletError::Finalize(e.to_string()))
}
