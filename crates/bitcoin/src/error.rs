use std::fmt;

/// Errors of the Bitcoin layer.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("unknown network {0:?} (expected mainnet, testnet, signet or regtest)")]
    UnknownNetwork(String),
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
    #[error("sighash type {0:#x} is not standard for this script type")]
    NonStandardSighash(u32),
    #[error("SIGHASH_SINGLE without a matching output")]
    SingleWithoutOutput,
    #[error("sighash: {0}")]
    Sighash(String),
}
