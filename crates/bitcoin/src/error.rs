use std::fmt;

/// Errors of the Bitcoin layer.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("invalid derivation path: {0}")]
    InvalidPath(String),
    #[error("descriptor: {0}")]
    Descriptor(String),
    #[error("PSBT refused: {}", display_inputs(.0))]
    Inputs(Vec<InputError>),
    #[error("PSBT is malformed: {0}")]
    MalformedPsbt(String),
    #[error("transaction refused: {0}")]
    InvalidTransaction(#[from] crate::validity::TxProblem),
    #[error("signature for input {input}: {reason}")]
    Signature { input: usize, reason: String },
    #[error("finalize: {0}")]
    Finalize(String),
    #[error("transaction fails verification at input {input}: {reason}")]
    Verification { input: usize, reason: String },
    #[error(transparent)]
    Protocol(#[from] mpc_protocols::ProtocolError),
}

fn display_inputs(errors: &[InputError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why one PSBT input was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub input: usize,
    pub problem: InputProblem,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "input {}: {}", self.input, self.problem)
    }
}

/// The reasons a signer refuses to sign an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputProblem {
    #[error("spent output (witness_utxo or non_witness_utxo) is missing")]
    MissingUtxo,
    #[error("non_witness_utxo does not match the outpoint it claims to spend")]
    UtxoMismatch,
    #[error("witness_utxo disagrees with the output of non_witness_utxo it claims to be")]
    WitnessUtxoMismatch,
    #[error(
        "P2WPKH input without non_witness_utxo: its amount must be proven by the previous \
         transaction (BIP-143 commits only to each input's own amount)"
    )]
    AmountUnproven,
    #[error("unsupported script type {0} (only P2WPKH and key-path P2TR are signed)")]
    UnsupportedScript(String),
    #[error("no derivation path of this wallet (bip32_derivation / tap_key_origins with its fingerprint)")]
    NotOurs,
    #[error("derivation path {0}: {1}")]
    BadPath(String, String),
    #[error("key at {path} does not produce the spent script: the input is not this wallet's")]
    ScriptMismatch { path: String },
    #[error("script type {script} needs a {expected} wallet")]
    WrongScheme {
        script: &'static str,
        expected: &'static str,
    },
    #[error("taproot script-path spends are not signed (leaf hashes present)")]
    ScriptPath,
    #[error(
        "sighash type {0:#x} refused: only SIGHASH_ALL (P2WPKH) and SIGHASH_DEFAULT or \
         SIGHASH_ALL (P2TR) commit to every input and output"
    )]
    SighashTypeRefused(u32),
    #[error("sighash: {0}")]
    Sighash(String),
}

impl InputProblem {
    /// Stable machine-readable code, as the API reports it per input.
    pub fn code(&self) -> &'static str {
        match self {
            InputProblem::MissingUtxo => "missing_utxo",
            InputProblem::UtxoMismatch => "utxo_mismatch",
            InputProblem::WitnessUtxoMismatch => "witness_utxo_mismatch",
            InputProblem::AmountUnproven => "amount_unproven",
            InputProblem::UnsupportedScript(_) => "unsupported_script",
            InputProblem::NotOurs => "not_ours",
            InputProblem::BadPath(..) => "bad_path",
            InputProblem::ScriptMismatch { .. } => "script_mismatch",
            InputProblem::WrongScheme { .. } => "wrong_scheme",
            InputProblem::ScriptPath => "script_path",
            InputProblem::SighashTypeRefused(_) => "sighash_type_refused",
            InputProblem::Sighash(_) => "sighash",
        }
    }
}
