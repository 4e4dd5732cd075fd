//! Building unsigned PSBTs that spend a wallet's outputs, with the derivation records every
//! signer needs (BIP-174 `bip32_derivation`, BIP-371 `tap_key_origins` / `tap_internal_key`).

use bitcoin::{
    absolute::LockTime,
    hashes::Hash,
    psbt::{Input, Output, Psbt},
    secp256k1::XOnlyPublicKey,
    transaction::Version,
    Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};
use mpc_protocols::DerivationPath;

use crate::{
    keys::{to_bip32, Scheme, WalletKey},
    InputError, InputProblem, WalletError,
};

/// An output one of our wallets can spend.
#[derive(Debug, Clone)]
pub struct SpendableOutput {
    pub outpoint: OutPoint,
    pub txout: TxOut,
    /// The transaction that created the output: required for P2WPKH (it proves the amount
    /// to every signer, see [`crate::psbt::spent_outputs`]), optional for P2TR.
    pub funding_transaction: Option<Transaction>,
    pub wallet: WalletKey,
    pub path: DerivationPath,
}

/// An output of the transaction being built; `owner` marks our own change.
#[derive(Debug, Clone)]
pub struct Payment {
    pub script_pubkey: ScriptBuf,
    pub amount: Amount,
    /// Set for change: the wallet and path the output pays back to.
    pub owner: Option<(WalletKey, DerivationPath)>,
}

/// Derivation records for `wallet` at `path`, in the form BIP-174/371 puts into a map.
enum Origin {
    Ecdsa(bitcoin::secp256k1::PublicKey, bitcoin::bip32::KeySource),
    Schnorr(XOnlyPublicKey, bitcoin::bip32::KeySource),
}

/// `key` is the wallet's key at `path`, derived by the caller.
fn origin(
    wallet: &WalletKey,
    path: &DerivationPath,
    key: bitcoin::secp256k1::PublicKey,
) -> Result<Origin, WalletError> {
    let source = (wallet.fingerprint()?, to_bip32(path)?.into());
    Ok(match wallet.scheme {
        Scheme::Ecdsa => Origin::Ecdsa(key, source),
        Scheme::Schnorr => Origin::Schnorr(XOnlyPublicKey::from(key), source),
    })
}

/// An unsigned version-2 PSBT spending `inputs` to `payments`, with derivation records on
/// every input and on change outputs. Inputs signal RBF.
pub fn build_psbt(inputs: &[SpendableOutput], payments: &[Payment]) -> Result<Psbt, WalletError> {
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: inputs
            .iter()
            .map(|i| TxIn {
                previous_output: i.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            })
            .collect(),
        output: payments
            .iter()
            .map(|p| TxOut {
                value: p.amount,
                script_pubkey: p.script_pubkey.clone(),
            })
            .collect(),
    };
    let mut psbt =
        Psbt::from_unsigned_tx(tx).map_err(|e| WalletError::MalformedPsbt(e.to_string()))?;
    for (index, (psbt_input, spend)) in psbt.inputs.iter_mut().zip(inputs).enumerate() {
        let refuse = |problem| {
            WalletError::Inputs(vec![InputError {
                input: index,
                problem,
            }])
        };
        match &spend.funding_transaction {
            Some(funding) => {
                let proven = usize::try_from(spend.outpoint.vout)
                    .ok()
                    .and_then(|vout| funding.output.get(vout));
                if funding.compute_txid() != spend.outpoint.txid || proven != Some(&spend.txout) {
                    return Err(refuse(InputProblem::UtxoMismatch));
                }
            }
            None if !spend.txout.script_pubkey.is_p2tr() => {
                return Err(refuse(InputProblem::AmountUnproven))
            }
            None => {}
        }
        // One derivation serves both the script check and the derivation record.
        let key = spend.wallet.derive(&spend.path)?;
        if spend.wallet.address_of(key).script_pubkey() != spend.txout.script_pubkey {
            return Err(WalletError::InvalidPath(format!(
                "{} of the wallet does not pay to the script of {}",
                spend.path, spend.outpoint
            )));
        }
        *psbt_input = Input {
            witness_utxo: Some(spend.txout.clone()),
            non_witness_utxo: spend.funding_transaction.clone(),
            ..Input::default()
        };
        match origin(&spend.wallet, &spend.path, key)? {
            Origin::Ecdsa(key, source) => {
                psbt_input.bip32_derivation.insert(key, source);
            }
            Origin::Schnorr(key, source) => {
                psbt_input.tap_internal_key = Some(key);
                psbt_input.tap_key_origins.insert(key, (Vec::new(), source));
            }
        }
    }
    for (psbt_output, payment) in psbt.outputs.iter_mut().zip(payments) {
        *psbt_output = Output::default();
        if let Some((wallet, path)) = &payment.owner {
            match origin(wallet, path, wallet.derive(path)?)? {
                Origin::Ecdsa(key, source) => {
                    psbt_output.bip32_derivation.insert(key, source);
                }
                Origin::Schnorr(key, source) => {
                    psbt_output.tap_internal_key = Some(key);
                    psbt_output
                        .tap_key_origins
                        .insert(key, (Vec::new(), source));
                }
            }
        }
    }
    Ok(psbt)
}

/// SYNTHETIC funding, for the demo and tests only: output 0 of a made-up transaction that
/// exists on no chain, paying `amount` to `wallet` at `path`. Its one input spends an outpoint
/// whose txid is a hash of the label, so it is recognisably not a real transaction; it is a
/// whole transaction so that signers can check the amount against its txid as they would a
/// real one's.
pub fn synthetic_funding(
    wallet: &WalletKey,
    path: &DerivationPath,
    amount: Amount,
    label: &str,
) -> Result<SpendableOutput, WalletError> {
    let txout = TxOut {
        value: amount,
        script_pubkey: wallet.script_pubkey(path)?,
    };
    let funding = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: Txid::hash(format!("mpc-wallet SYNTHETIC funding: {label}").as_bytes()),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![txout.clone()],
    };
    Ok(SpendableOutput {
        outpoint: OutPoint {
            txid: funding.compute_txid(),
            vout: 0,
        },
        txout,
        funding_transaction: Some(funding),
        wallet: wallet.clone(),
        path: path.clone(),
    })
}
