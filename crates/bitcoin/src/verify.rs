//! Whole-transaction verification with Bitcoin Core's script interpreter.

use bitcoin::{consensus, Transaction, TxOut};

use crate::WalletError;

/// Consensus flags: everything through Taproot. bitcoinconsensus verifies Taproot only when
/// the spent outputs are passed (with `None`, a forged Taproot signature verifies `Ok`).
const FLAGS: u32 = bitcoinconsensus::VERIFY_ALL_PRE_TAPROOT | bitcoinconsensus::VERIFY_TAPROOT;

/// Verifies every input of `tx` against `spent` (its spent outputs, in input order) with
/// `bitcoinconsensus`, then checks the standardness rules consensus does not enforce but the
/// network's relay policy does (low-S ECDSA signatures).
pub fn verify_transaction(tx: &Transaction, spent: &[TxOut]) -> Result<(), WalletError> {
    if spent.len() != tx.input.len() {
        return Err(WalletError::Verification {
            input: spent.len().min(tx.input.len()),
            reason: format!(
                "{} spent outputs for {} inputs",
                spent.len(),
                tx.input.len()
            ),
        });
    }
    let tx_bytes = consensus::serialize(tx);
    // `Utxo` holds pointers into `spent`, which outlives every use below.
    let utxos = spent
        .iter()
        .enumerate()
        .map(|(input, out)| {
            Ok(bitcoinconsensus::Utxo {
                script_pubkey: out.script_pubkey.as_bytes().as_ptr(),
                script_pubkey_len: u32::try_from(out.script_pubkey.len()).map_err(|_| {
                    WalletError::Verification {
                        input,
                        reason: "script too long".into(),
                    }
                })?,
                value: i64::try_from(out.value.to_sat()).map_err(|_| {
                    WalletError::Verification {
                        input,
                        reason: "amount out of range".into(),
                    }
                })?,
            })
        })
        .collect::<Result<Vec<_>, WalletError>>()?;
    for (input, out) in spent.iter().enumerate() {
        bitcoinconsensus::verify_with_flags(
            out.script_pubkey.as_bytes(),
            out.value.to_sat(),
            &tx_bytes,
            Some(&utxos),
            input,
            FLAGS,
        )
        .map_err(|e| WalletError::Verification {
            input,
            reason: format!("bitcoinconsensus: {e:?}"),
        })?;
        check_low_s(tx, input, out)?;
    }
    Ok(())
}

/// Relay policy (BIP-146 LOW_S) for P2WPKH witnesses: `[signature || sighash byte, pubkey]`.
fn check_low_s(tx: &Transaction, input: usize, spent: &TxOut) -> Result<(), WalletError> {
    if !spent.script_pubkey.is_p2wpkh() {
        return Ok(());
    }
    let bad = |reason: &str| WalletError::Verification {
        input,
        reason: reason.into(),
    };
    let witness = &tx.input[input].witness;
    let sig = witness.nth(0).ok_or_else(|| bad("empty witness"))?;
    let (_sighash_byte, der) = sig.split_last().ok_or_else(|| bad("empty signature"))?;
    let parsed = bitcoin::secp256k1::ecdsa::Signature::from_der(der)
        .map_err(|_| bad("signature is not strict DER"))?;
    let mut normalized = parsed;
    normalized.normalize_s();
    if normalized != parsed {
        return Err(bad("high-S signature (non-standard, BIP-146)"));
    }
    Ok(())
}
