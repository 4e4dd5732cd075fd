//! Whether a transaction could ever be mined and relayed, checked by every signer before it
//! signs (design invariant 9).
//!
//! `bitcoinconsensus` checks scripts, not the transaction around them: without these rules a
//! signer would sign transactions no node accepts (the same outpoint spent twice, values over
//! 21 million BTC, no outputs). Two sets of rules:
//!
//! * **consensus rules that need no chain**: Bitcoin Core's `CheckTransaction` (inputs and
//!   outputs present, size, output values and their sum within `MAX_MONEY`, no duplicate
//!   input, no null previous output) and the value checks of `CheckTxInputs` (each spent
//!   amount and their sum within `MAX_MONEY`, no more out than in);
//! * **relay policy** (`IsStandardTx` and dust): a signature over a transaction that stays
//!   out of every mempool is one its holder can keep and try to use later, so the signer
//!   refuses it: version 1 or 2, weight at most 400,000, at least 65 bytes without witness,
//!   standard output scripts, at most one data-carrier (`OP_RETURN`) output of at most 83
//!   bytes, no dust.
//!
//! All arithmetic on amounts is checked.

use std::collections::HashMap;

use bitcoin::{
    transaction::{predict_weight, InputWeightPrediction},
    Amount, OutPoint, Script, Transaction, TxOut, Weight,
};

/// Bitcoin Core's `MAX_BLOCK_WEIGHT` (consensus).
pub const MAX_BLOCK_WEIGHT: u64 = 4_000_000;
/// Bitcoin Core's `MAX_STANDARD_TX_WEIGHT` (relay policy).
pub const MAX_STANDARD_TX_WEIGHT: u64 = 400_000;
/// Bitcoin Core's `MIN_STANDARD_TX_NONWITNESS_SIZE` (relay policy, since 25.0).
pub const MIN_STANDARD_TX_NONWITNESS_SIZE: usize = 65;
/// Bitcoin Core's `MAX_OP_RETURN_RELAY` before 30.0: an `OP_RETURN` script of at most 83 bytes.
pub const DEFAULT_MAX_DATA_CARRIER_BYTES: usize = 83;
/// Default most inputs a signer accepts in one PSBT.
pub const DEFAULT_MAX_INPUTS: usize = 100;

/// The rules a node's configuration can set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxRules {
    /// Most inputs per transaction: every input is a signing, and an interactive ECDSA input
    /// costs every signer seconds of CPU.
    pub max_inputs: usize,
    /// Sign transactions whose outputs use scripts outside the standard templates (bare
    /// multisig, P2PK, arbitrary scripts). Off by default.
    pub allow_nonstandard_outputs: bool,
    /// Largest `OP_RETURN` output script.
    pub max_data_carrier_bytes: usize,
}

impl Default for TxRules {
    fn default() -> Self {
        Self {
            max_inputs: DEFAULT_MAX_INPUTS,
            allow_nonstandard_outputs: false,
            max_data_carrier_bytes: DEFAULT_MAX_DATA_CARRIER_BYTES,
        }
    }
}

/// Why a transaction is refused. [`code`](TxProblem::code) is stable (the API's `rule`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxProblem {
    #[error("the transaction has no inputs")]
    NoInputs,
    #[error("the transaction has no outputs")]
    NoOutputs,
    #[error("{count} inputs; this node signs at most {max} per transaction")]
    TooManyInputs { count: usize, max: usize },
    #[error("input {input} spends the same output as input {first}")]
    DuplicateInput { input: usize, first: usize },
    #[error("input {input} spends the null outpoint (only a coinbase may)")]
    NullPrevout { input: usize },
    #[error("output {output}'s value is above 21 million BTC")]
    OutputValueOutOfRange { output: usize },
    #[error("the outputs' sum is above 21 million BTC")]
    OutputsTotalOutOfRange,
    #[error("input {input} spends an amount above 21 million BTC")]
    InputValueOutOfRange { input: usize },
    #[error("the spent amounts' sum is above 21 million BTC")]
    InputsTotalOutOfRange,
    #[error("the outputs ({outputs_sats} sats) exceed the spent amounts ({inputs_sats} sats)")]
    OutputsExceedInputs { inputs_sats: u64, outputs_sats: u64 },
    #[error("weight {weight} is above the consensus limit {MAX_BLOCK_WEIGHT}")]
    TooLarge { weight: u64 },
    #[error("version {version} is not standard (1 or 2)")]
    NonStandardVersion { version: i32 },
    #[error("weight {weight} once signed is above the standard limit {MAX_STANDARD_TX_WEIGHT}")]
    NonStandardWeight { weight: u64 },
    #[error(
        "{size} bytes without witness is below the standard minimum \
         {MIN_STANDARD_TX_NONWITNESS_SIZE}"
    )]
    TooSmall { size: usize },
    #[error("output {output} pays a non-standard script ({kind})")]
    NonStandardOutput { output: usize, kind: String },
    #[error("output {output} is an OP_RETURN of {bytes} bytes; at most {max} are standard")]
    DataCarrierTooLarge {
        output: usize,
        bytes: usize,
        max: usize,
    },
    #[error("output {output} is a second OP_RETURN output; one is standard")]
    SecondDataCarrier { output: usize },
    #[error(
        "output {output} pays {value} sats, below the dust limit {minimum} sats of its script"
    )]
    Dust {
        output: usize,
        value: u64,
        minimum: u64,
    },
}

impl TxProblem {
    /// Stable machine-readable name of the rule.
    pub fn code(&self) -> &'static str {
        match self {
            TxProblem::NoInputs => "no_inputs",
            TxProblem::NoOutputs => "no_outputs",
            TxProblem::TooManyInputs { .. } => "too_many_inputs",
            TxProblem::DuplicateInput { .. } => "duplicate_input",
            TxProblem::NullPrevout { .. } => "null_prevout",
            TxProblem::OutputValueOutOfRange { .. } | TxProblem::OutputsTotalOutOfRange => {
                "output_value_out_of_range"
            }
            TxProblem::InputValueOutOfRange { .. } | TxProblem::InputsTotalOutOfRange => {
                "input_value_out_of_range"
            }
            TxProblem::OutputsExceedInputs { .. } => "outputs_exceed_inputs",
            TxProblem::TooLarge { .. } => "too_large",
            TxProblem::NonStandardVersion { .. } => "nonstandard_version",
            TxProblem::NonStandardWeight { .. } => "nonstandard_weight",
            TxProblem::TooSmall { .. } => "too_small",
            TxProblem::NonStandardOutput { .. } => "nonstandard_output",
            TxProblem::DataCarrierTooLarge { .. } | TxProblem::SecondDataCarrier { .. } => {
                "data_carrier"
            }
            TxProblem::Dust { .. } => "dust_output",
        }
    }

    /// The input the problem is about, if one.
    pub fn input(&self) -> Option<usize> {
        match self {
            TxProblem::DuplicateInput { input, .. }
            | TxProblem::NullPrevout { input }
            | TxProblem::InputValueOutOfRange { input } => Some(*input),
            _ => None,
        }
    }

    /// The output the problem is about, if one.
    pub fn output(&self) -> Option<usize> {
        match self {
            TxProblem::OutputValueOutOfRange { output }
            | TxProblem::NonStandardOutput { output, .. }
            | TxProblem::DataCarrierTooLarge { output, .. }
            | TxProblem::SecondDataCarrier { output }
            | TxProblem::Dust { output, .. } => Some(*output),
            _ => None,
        }
    }
}

/// The refusal of a PSBT with more inputs than `max`: checked first, before any per-input
/// work.
pub fn check_input_count(count: usize, max: usize) -> Result<(), TxProblem> {
    if count > max {
        return Err(TxProblem::TooManyInputs { count, max });
    }
    Ok(())
}

/// The weight of `tx` once signed, its inputs spending `spent`: our two script types with the
/// largest witness each can carry (a 72-byte DER signature; a 65-byte Schnorr signature).
pub fn signed_weight(tx: &Transaction, spent: &[TxOut]) -> Weight {
    let inputs = spent.iter().map(|o| {
        if o.script_pubkey.is_p2tr() {
            InputWeightPrediction::P2TR_KEY_NON_DEFAULT_SIGHASH
        } else {
            InputWeightPrediction::P2WPKH_MAX
        }
    });
    predict_weight(inputs, tx.output.iter().map(|o| o.script_pubkey.len()))
}

/// Checks `tx`, whose inputs spend `spent` (in input order), against consensus and the
/// standardness rules.
pub fn check_transaction(
    tx: &Transaction,
    spent: &[TxOut],
    rules: &TxRules,
) -> Result<(), TxProblem> {
    check_consensus(tx, spent, rules)?;
    check_standard(tx, spent, rules)
}

fn check_consensus(tx: &Transaction, spent: &[TxOut], rules: &TxRules) -> Result<(), TxProblem> {
    if tx.input.is_empty() {
        return Err(TxProblem::NoInputs);
    }
    if tx.output.is_empty() {
        return Err(TxProblem::NoOutputs);
    }
    check_input_count(tx.input.len(), rules.max_inputs)?;
    // CheckTransaction's size rule: the serialization without witness, scaled.
    let stripped = tx.base_size() as u64 * 4;
    if stripped > MAX_BLOCK_WEIGHT {
        return Err(TxProblem::TooLarge { weight: stripped });
    }
    let mut outputs_total = Amount::ZERO;
    for (output, out) in tx.output.iter().enumerate() {
        if out.value > Amount::MAX_MONEY {
            return Err(TxProblem::OutputValueOutOfRange { output });
        }
        outputs_total = outputs_total
            .checked_add(out.value)
            .filter(|total| *total <= Amount::MAX_MONEY)
            .ok_or(TxProblem::OutputsTotalOutOfRange)?;
    }
    let mut first_spender: HashMap<OutPoint, usize> = HashMap::with_capacity(tx.input.len());
    for (input, txin) in tx.input.iter().enumerate() {
        if txin.previous_output.is_null() {
            return Err(TxProblem::NullPrevout { input });
        }
        if let Some(first) = first_spender.insert(txin.previous_output, input) {
            return Err(TxProblem::DuplicateInput { input, first });
        }
    }
    let mut inputs_total = Amount::ZERO;
    for (input, out) in spent.iter().enumerate() {
        if out.value > Amount::MAX_MONEY {
            return Err(TxProblem::InputValueOutOfRange { input });
        }
        inputs_total = inputs_total
            .checked_add(out.value)
            .filter(|total| *total <= Amount::MAX_MONEY)
            .ok_or(TxProblem::InputsTotalOutOfRange)?;
    }
    if outputs_total > inputs_total {
        return Err(TxProblem::OutputsExceedInputs {
            inputs_sats: inputs_total.to_sat(),
            outputs_sats: outputs_total.to_sat(),
        });
    }
    Ok(())
}

fn check_standard(tx: &Transaction, spent: &[TxOut], rules: &TxRules) -> Result<(), TxProblem> {
    let version = tx.version.0;
    if !(1..=2).contains(&version) {
        return Err(TxProblem::NonStandardVersion { version });
    }
    let weight = signed_weight(tx, spent).to_wu();
    if weight > MAX_STANDARD_TX_WEIGHT {
        return Err(TxProblem::NonStandardWeight { weight });
    }
    let size = tx.base_size();
    if size < MIN_STANDARD_TX_NONWITNESS_SIZE {
        return Err(TxProblem::TooSmall { size });
    }
    let mut data_carrier = false;
    for (output, out) in tx.output.iter().enumerate() {
        let script = &out.script_pubkey;
        if script.is_op_return() {
            if data_carrier {
                return Err(TxProblem::SecondDataCarrier { output });
            }
            data_carrier = true;
            if script.len() > rules.max_data_carrier_bytes {
                return Err(TxProblem::DataCarrierTooLarge {
                    output,
                    bytes: script.len(),
                    max: rules.max_data_carrier_bytes,
                });
            }
            // Unspendable: the dust rule does not apply.
            continue;
        }
        if !rules.allow_nonstandard_outputs && !is_standard_output(script) {
            return Err(TxProblem::NonStandardOutput {
                output,
                kind: crate::psbt::describe_script(script),
            });
        }
        let minimum = script.minimal_non_dust();
        if out.value < minimum {
            return Err(TxProblem::Dust {
                output,
                value: out.value.to_sat(),
                minimum: minimum.to_sat(),
            });
        }
    }
    Ok(())
}

/// The output templates we pay to: P2PKH, P2SH, segwit v0 (P2WPKH, P2WSH), and witness
/// programs of later versions (P2TR, pay-to-anchor, future upgrades), which Bitcoin Core
/// relays. Stricter than Core: bare multisig and P2PK are left to `allow_nonstandard_outputs`.
fn is_standard_output(script: &Script) -> bool {
    if script.is_p2pkh() || script.is_p2sh() {
        return true;
    }
    match script.witness_version() {
        Some(bitcoin::WitnessVersion::V0) => script.is_p2wpkh() || script.is_p2wsh(),
        Some(_) => script.is_witness_program(),
        None => false,
    }
}
