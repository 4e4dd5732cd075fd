//! PSBT analysis: what every signer does before it signs.
//!
//! For each input: find the spent output, the script type, this wallet's derivation record,
//! re-derive the key at that path and check that it produces the spent script, then compute
//! the sighash (BIP-143 preimage for P2WPKH, BIP-341 sighash for P2TR) from the transaction
//! and the spent outputs. Nothing the PSBT claims about keys or hashes is taken on trust.

use bitcoin::{
    hashes::Hash,
    psbt::Psbt,
    secp256k1::XOnlyPublicKey,
    sighash::{EcdsaSighashType, Prevouts, SighashCache, TapSighashType},
    Address, Script, Transaction, TxOut,
};
use mpc_protocols::{ecdsa::SighashPreimage, DerivationPath};

use crate::{
    keys::{from_bip32, Scheme, WalletKey},
    validity::{check_input_count, check_transaction, TxRules},
    InputError, InputProblem, WalletError,
};

/// One signature to produce: which input, with which wallet and path, over which message.
#[derive(Debug, Clone)]
pub struct SigningJob {
    pub input: usize,
    /// Index into the `wallets` slice given to [`analyze`].
    pub wallet: usize,
    pub path: DerivationPath,
    pub message: JobMessage,
}

/// The message of a signing job, computed by this signer.
#[derive(Debug, Clone)]
pub enum JobMessage {
    /// P2WPKH: the BIP-143 preimage (cggmp24 hashes it) and the key that must verify.
    Ecdsa {
        preimage: SighashPreimage,
        sighash_type: EcdsaSighashType,
        public_key: bitcoin::secp256k1::PublicKey,
    },
    /// P2TR key path: the BIP-341 sighash and the internal key at the path.
    Schnorr {
        sighash: [u8; 32],
        sighash_type: TapSighashType,
        internal_key: XOnlyPublicKey,
    },
}

impl JobMessage {
    /// The 32-byte value the signature commits to.
    pub fn sighash(&self) -> [u8; 32] {
        match self {
            JobMessage::Ecdsa { preimage, .. } => preimage.sighash(),
            JobMessage::Schnorr { sighash, .. } => *sighash,
        }
    }
}

/// The spent output of every input, in input order, each proven to the signer (design
/// invariant 9): the amount a signature commits to is never taken from the request alone.
///
/// * A P2WPKH input needs `non_witness_utxo`, the previous transaction, whose txid must be
///   the outpoint's: BIP-143 commits only to the signed input's own amount, so amounts taken
///   from `witness_utxo` could be misstated for different inputs in different requests over
///   one transaction, and the signatures combined into a transaction whose real fee nobody
///   approved.
/// * A P2TR input may carry `witness_utxo` alone: BIP-341 commits every signature to every
///   input's amount and script, so a misstated one makes every Taproot signature invalid.
/// * Where both are present they must agree.
pub fn spent_outputs(psbt: &Psbt) -> Result<Vec<TxOut>, Vec<InputError>> {
    let mut errors = Vec::new();
    let mut outputs = Vec::with_capacity(psbt.inputs.len());
    for (index, (input, txin)) in psbt.inputs.iter().zip(&psbt.unsigned_tx.input).enumerate() {
        match proven_spent_output(input, txin) {
            Ok(out) => outputs.push(out),
            Err(problem) => errors.push(InputError {
                input: index,
                problem,
            }),
        }
    }
    if errors.is_empty() {
        Ok(outputs)
    } else {
        Err(errors)
    }
}

fn proven_spent_output(
    input: &bitcoin::psbt::Input,
    txin: &bitcoin::TxIn,
) -> Result<TxOut, InputProblem> {
    let from_previous = match &input.non_witness_utxo {
        Some(prev_tx) => {
            if prev_tx.compute_txid() != txin.previous_output.txid {
                return Err(InputProblem::UtxoMismatch);
            }
            let out = usize::try_from(txin.previous_output.vout)
                .ok()
                .and_then(|vout| prev_tx.output.get(vout))
                .ok_or(InputProblem::UtxoMismatch)?;
            Some(out.clone())
        }
        None => None,
    };
    match (from_previous, &input.witness_utxo) {
        (Some(proven), Some(claimed)) if &proven != claimed => {
            Err(InputProblem::WitnessUtxoMismatch)
        }
        (Some(proven), _) => Ok(proven),
        (None, Some(claimed)) if claimed.script_pubkey.is_p2tr() => Ok(claimed.clone()),
        (None, Some(_)) => Err(InputProblem::AmountUnproven),
        (None, None) => Err(InputProblem::MissingUtxo),
    }
}

/// Analyzes every input of `psbt` against `wallets`: each input must belong to one of them,
/// and the transaction must be valid under `rules` ([`crate::validity`]). Returns one job per
/// input, or every refused input with its reason.
pub fn analyze(
    psbt: &Psbt,
    wallets: &[&WalletKey],
    rules: &TxRules,
) -> Result<Vec<SigningJob>, WalletError> {
    if psbt.inputs.len() != psbt.unsigned_tx.input.len()
        || psbt.outputs.len() != psbt.unsigned_tx.output.len()
    {
        return Err(WalletError::MalformedPsbt(
            "input/output maps do not match the unsigned transaction".into(),
        ));
    }
    // Before any per-input work: the count bounds what one request can cost.
    check_input_count(psbt.inputs.len(), rules.max_inputs)?;
    let spent = spent_outputs(psbt).map_err(WalletError::Inputs)?;
    check_transaction(&psbt.unsigned_tx, &spent, rules)?;
    let fingerprints = wallets
        .iter()
        .map(|w| w.fingerprint())
        .collect::<Result<Vec<_>, _>>()?;

    let mut cache = SighashCache::new(&psbt.unsigned_tx);
    let mut jobs = Vec::new();
    let mut errors = Vec::new();
    for index in 0..psbt.inputs.len() {
        match analyze_input(psbt, index, &spent, wallets, &fingerprints, &mut cache) {
            Ok(job) => jobs.push(job),
            Err(problem) => errors.push(InputError {
                input: index,
                problem,
            }),
        }
    }
    if errors.is_empty() {
        Ok(jobs)
    } else {
        Err(WalletError::Inputs(errors))
    }
}

fn analyze_input(
    psbt: &Psbt,
    index: usize,
    spent: &[TxOut],
    wallets: &[&WalletKey],
    fingerprints: &[bitcoin::bip32::Fingerprint],
    cache: &mut SighashCache<&Transaction>,
) -> Result<SigningJob, InputProblem> {
    let input = &psbt.inputs[index];
    let script = &spent[index].script_pubkey;
    // Derivation records with one of our fingerprints, as (wallet, path).
    let claims: Vec<(usize, &bitcoin::bip32::DerivationPath)> = if script.is_p2wpkh() {
        input
            .bip32_derivation
            .values()
            .filter_map(|(fp, path)| fingerprints.iter().position(|f| f == fp).map(|w| (w, path)))
            .collect()
    } else if script.is_p2tr() {
        let mut claims = Vec::new();
        for (leaves, (fp, path)) in input.tap_key_origins.values() {
            if let Some(w) = fingerprints.iter().position(|f| f == fp) {
                if !leaves.is_empty() {
                    return Err(InputProblem::ScriptPath);
                }
                claims.push((w, path));
            }
        }
        claims
    } else {
        return Err(InputProblem::UnsupportedScript(describe_script(script)));
    };
    let (wallet_index, bip32_path) = match claims.as_slice() {
        [] => return Err(InputProblem::NotOurs),
        [one] => *one,
        // Several records of our wallets on one input: ambiguous, so refuse.
        _ => {
            return Err(InputProblem::BadPath(
                "several".into(),
                "more than one derivation record of our wallets".into(),
            ))
        }
    };
    let wallet = wallets[wallet_index];
    let path =
        from_bip32(bip32_path).map_err(|e| InputProblem::BadPath(bip32_path.to_string(), e))?;
    // One derivation serves both the ownership check and the signing key.
    let key = wallet
        .derive(&path)
        .map_err(|e| InputProblem::BadPath(path.to_string(), e.to_string()))?;
    if &wallet.address_of(key).script_pubkey() != script {
        return Err(InputProblem::ScriptMismatch {
            path: path.to_string(),
        });
    }
    let raw_sighash_type = input.sighash_type.map(|t| t.to_u32());

    let message = if script.is_p2wpkh() {
        if wallet.scheme != Scheme::Ecdsa {
            return Err(InputProblem::WrongScheme {
                script: "p2wpkh",
                expected: "cggmp24 (ECDSA)",
            });
        }
        // Invariant 9: only SIGHASH_ALL commits to every input and output; any other type
        // leaves a signature its holder could reuse in a transaction no policy saw.
        let sighash_type = match raw_sighash_type {
            None | Some(0x01) => EcdsaSighashType::All,
            Some(raw) => return Err(InputProblem::SighashTypeRefused(raw)),
        };
        JobMessage::Ecdsa {
            preimage: segwit_v0_preimage(cache, index, script, spent[index].value, sighash_type)?,
            sighash_type,
            public_key: key,
        }
    } else {
        if wallet.scheme != Scheme::Schnorr {
            return Err(InputProblem::WrongScheme {
                script: "p2tr",
                expected: "frost (Schnorr)",
            });
        }
        let sighash_type = match raw_sighash_type {
            None | Some(0x00) => TapSighashType::Default,
            Some(0x01) => TapSighashType::All,
            Some(raw) => return Err(InputProblem::SighashTypeRefused(raw)),
        };
        let internal_key = XOnlyPublicKey::from(key);
        if let Some(claimed) = input.tap_internal_key {
            if claimed != internal_key {
                return Err(InputProblem::ScriptMismatch {
                    path: path.to_string(),
                });
            }
        }
        let (_, sighash) = taproot_key_spend(cache, index, spent, sighash_type)?;
        JobMessage::Schnorr {
            sighash,
            sighash_type,
            internal_key,
        }
    };
    Ok(SigningJob {
        input: index,
        wallet: wallet_index,
        path,
        message,
    })
}

/// The BIP-143 preimage for a P2WPKH input (its double SHA-256 is the sighash).
pub fn segwit_v0_preimage(
    cache: &mut SighashCache<&Transaction>,
    index: usize,
    script_pubkey: &Script,
    value: bitcoin::Amount,
    sighash_type: EcdsaSighashType,
) -> Result<SighashPreimage, InputProblem> {
    let script_code = script_pubkey
        .p2wpkh_script_code()
        .ok_or_else(|| InputProblem::UnsupportedScript(describe_script(script_pubkey)))?;
    let mut preimage = Vec::with_capacity(256);
    cache
        .segwit_v0_encode_signing_data_to(&mut preimage, index, &script_code, value, sighash_type)
        .map_err(|e| InputProblem::Sighash(e.to_string()))?;
    Ok(SighashPreimage::new(preimage))
}

/// BIP-341 key-path signing data: `(0x00 || SigMsg, sighash)`, the epoch byte included as in
/// the BIP-341 wallet vectors; the sighash is `TaggedHash("TapSighash", 0x00 || SigMsg)`.
pub fn taproot_key_spend(
    cache: &mut SighashCache<&Transaction>,
    index: usize,
    spent: &[TxOut],
    sighash_type: TapSighashType,
) -> Result<(Vec<u8>, [u8; 32]), InputProblem> {
    let prevouts = Prevouts::All(spent);
    let mut sig_msg = Vec::with_capacity(256);
    cache
        .taproot_encode_signing_data_to(&mut sig_msg, index, &prevouts, None, None, sighash_type)
        .map_err(|e| InputProblem::Sighash(e.to_string()))?;
    let sighash = cache
        .taproot_key_spend_signature_hash(index, &prevouts, sighash_type)
        .map_err(|e| InputProblem::Sighash(e.to_string()))?;
    Ok((sig_msg, sighash.to_byte_array()))
}

pub(crate) fn describe_script(script: &Script) -> String {
    match Address::from_script(script, bitcoin::Network::Bitcoin) {
        Ok(addr) => format!("{:?}", addr.address_type()).to_lowercase(),
        Err(_) if script.is_op_return() => "op_return".into(),
        Err(_) => format!("non-standard script {}", script.to_hex_string()),
    }
}

/// Parses a base64 PSBT, with a clear error on malformed input.
pub fn parse_psbt(base64: &str) -> Result<Psbt, WalletError> {
    base64
        .trim()
        .parse::<Psbt>()
        .map_err(|e| WalletError::MalformedPsbt(e.to_string()))
}

/// Verifies a signature job's result with libsecp256k1 (through rust-bitcoin).
pub(crate) fn verify_job_signature(
    job: &SigningJob,
    signature: &crate::finalize::InputSignature,
) -> Result<(), String> {
    use crate::finalize::InputSignature;
    let secp = crate::secp();
    match (&job.message, signature) {
        (JobMessage::Ecdsa { public_key, .. }, InputSignature::Ecdsa(sig)) => {
            let sig = bitcoin::secp256k1::ecdsa::Signature::from_compact(&sig.to_compact())
                .map_err(|e| e.to_string())?;
            let msg = bitcoin::secp256k1::Message::from_digest(job.message.sighash());
            secp.verify_ecdsa(&msg, &sig, public_key)
                .map_err(|e| e.to_string())
        }
        (JobMessage::Schnorr { internal_key, .. }, InputSignature::Schnorr(sig)) => {
            use bitcoin::key::TapTweak;
            let (output_key, _) = internal_key.tap_tweak(secp, None);
            let sig = bitcoin::secp256k1::schnorr::Signature::from_slice(&sig.to_bytes())
                .map_err(|e| e.to_string())?;
            let msg = bitcoin::secp256k1::Message::from_digest(job.message.sighash());
            secp.verify_schnorr(&sig, &msg, &output_key.to_x_only_public_key())
                .map_err(|e| e.to_string())
        }
        _ => Err("signature scheme does not match the input's script type".into()),
    }
}
