//! Spending a wallet's registered outputs: recipient checks, coin selection and fee math.
//!
//! Coin selection is BDK's (`bdk_wallet::coin_selection`): branch and bound for a changeless
//! match, falling back to single random draw, the same default the BDK wallet uses. What BDK
//! leaves to its caller is done here: the fee of the transaction's fixed part (version, counts,
//! outputs, lock time and the segwit marker), each input's witness weight for our two script
//! types, and refusing dust and addresses of another network before anything is selected.

use bdk_wallet::{
    coin_selection::{
        BranchAndBoundCoinSelection, CoinSelectionAlgorithm, Excess, SingleRandomDraw,
    },
    Utxo, WeightedUtxo,
};
use bitcoin::{
    absolute::LockTime,
    psbt::{Input, Psbt},
    transaction::{predict_weight, InputWeightPrediction, Version},
    Address, Amount, FeeRate, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxOut, Weight,
};
use mpc_protocols::DerivationPath;
use rand_core::RngCore;

use crate::{
    build::{build_psbt, Payment, SpendableOutput},
    keys::{Scheme, WalletKey},
    WalletError,
};

/// Lowest fee rate accepted, in sat/vB (Bitcoin Core's default minimum relay fee since 29.0).
pub const MIN_FEE_RATE_SAT_VB: f64 = 0.1;
/// Highest fee rate accepted, in sat/vB: anything above is almost surely a unit mistake.
pub const MAX_FEE_RATE_SAT_VB: f64 = 10_000.0;
/// The segwit marker and flag bytes, which BDK's per-input weights leave out.
const SEGWIT_MARKER_WEIGHT: Weight = Weight::from_wu(2);

/// Why a spend cannot be built. Each variant is a client mistake or a wallet state, with a
/// stable [`code`](SpendError::code) for the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpendError {
    #[error("recipient {address:?} is not a valid Bitcoin address: {reason}")]
    BadAddress { address: String, reason: String },
    #[error("recipient {address:?} is a {found} address, but the wallet is on {expected}")]
    WrongNetwork {
        address: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{amount} sats to this recipient is dust: at least {minimum} sats are needed")]
    Dust { amount: u64, minimum: u64 },
    #[error("amount must be between 1 sat and 21 million BTC (got {0} sats)")]
    InvalidAmount(u64),
    #[error("fee rate {0} sat/vB is outside {MIN_FEE_RATE_SAT_VB} to {MAX_FEE_RATE_SAT_VB}")]
    InvalidFeeRate(String),
    #[error("insufficient funds: {needed} sats needed (amount and fee), {available} sats available in {utxos} registered output(s)")]
    InsufficientFunds {
        needed: u64,
        available: u64,
        utxos: usize,
    },
}

impl SpendError {
    /// Stable machine-readable code, as the API reports it.
    pub fn code(&self) -> &'static str {
        match self {
            SpendError::BadAddress { .. } => "invalid_address",
            SpendError::WrongNetwork { .. } => "wrong_network",
            SpendError::Dust { .. } => "dust_output",
            SpendError::InvalidAmount(_) => "invalid_amount",
            SpendError::InvalidFeeRate(_) => "invalid_fee_rate",
            SpendError::InsufficientFunds { .. } => "insufficient_funds",
        }
    }
}

/// Parses `address` and requires it to be for `network`, telling a malformed address from one
/// of another network. Testnet and signet share their address format, so either is accepted
/// for the other, as everywhere in rust-bitcoin.
pub fn parse_recipient(address: &str, network: Network) -> Result<Address, SpendError> {
    let unchecked: Address<bitcoin::address::NetworkUnchecked> =
        address
            .trim()
            .parse()
            .map_err(|e: bitcoin::address::ParseError| SpendError::BadAddress {
                address: address.to_string(),
                reason: e.to_string(),
            })?;
    if unchecked.is_valid_for_network(network) {
        return Ok(unchecked.assume_checked());
    }
    let found = [
        Network::Bitcoin,
        Network::Testnet,
        Network::Regtest,
        Network::Signet,
    ]
    .into_iter()
    .find(|n| unchecked.is_valid_for_network(*n))
    .map(crate::network_name)
    .unwrap_or("unknown");
    Err(SpendError::WrongNetwork {
        address: address.to_string(),
        expected: crate::network_name(network),
        found,
    })
}

/// `sat/vB` as a [`FeeRate`], within the accepted range.
pub fn fee_rate(sat_per_vb: f64) -> Result<FeeRate, SpendError> {
    if !sat_per_vb.is_finite() || !(MIN_FEE_RATE_SAT_VB..=MAX_FEE_RATE_SAT_VB).contains(&sat_per_vb)
    {
        return Err(SpendError::InvalidFeeRate(sat_per_vb.to_string()));
    }
    // 1 sat/vB = 250 sat/kwu; rounded up so the rate is never below the one asked for.
    Ok(FeeRate::from_sat_per_kwu((sat_per_vb * 250.0).ceil() as u64))
}

/// The witness an input of `scheme` will carry once signed: P2WPKH `[DER signature with
/// sighash byte (at most 72), 33-byte key]`, or a P2TR key-path 64-byte Schnorr signature (the
/// PSBTs built here use the default sighash).
pub fn input_prediction(scheme: Scheme) -> InputWeightPrediction {
    match scheme {
        Scheme::Ecdsa => InputWeightPrediction::P2WPKH_MAX,
        Scheme::Schnorr => InputWeightPrediction::P2TR_KEY_DEFAULT_SIGHASH,
    }
}

/// Predicted weight of a signed transaction with `inputs` inputs of `scheme` paying to
/// `output_scripts`.
pub fn predicted_weight(scheme: Scheme, inputs: usize, output_scripts: &[&ScriptBuf]) -> Weight {
    predict_weight(
        std::iter::repeat_n(input_prediction(scheme), inputs),
        output_scripts.iter().map(|s| s.len()),
    )
}

/// A registered output of the wallet that may be spent.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub outpoint: OutPoint,
    pub txout: TxOut,
    /// The transaction that created it (required to spend P2WPKH outputs).
    pub funding_transaction: Option<Transaction>,
    pub path: DerivationPath,
}

/// The outcome of coin selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Indices into the candidates, in the order the transaction spends them.
    pub selected: Vec<usize>,
    /// The change output's value, if there is one (else the excess goes to the fee).
    pub change: Option<Amount>,
    pub fee: Amount,
    pub inputs_total: Amount,
}

/// Selects outputs of a `scheme` wallet to pay `amount` to `recipient` at `fee_rate`, with
/// change (if any) to a script like `change_script` (only its length matters here).
pub fn select_coins<R: RngCore>(
    scheme: Scheme,
    candidates: &[Candidate],
    recipient: &ScriptBuf,
    amount: Amount,
    fee_rate: FeeRate,
    change_script: &ScriptBuf,
    rng: &mut R,
) -> Result<Selection, SpendError> {
    if amount == Amount::ZERO || amount > Amount::MAX_MONEY {
        return Err(SpendError::InvalidAmount(amount.to_sat()));
    }
    let minimum = recipient.minimal_non_dust();
    if amount < minimum {
        return Err(SpendError::Dust {
            amount: amount.to_sat(),
            minimum: minimum.to_sat(),
        });
    }
    // The fixed part, as BDK's own transaction builder computes it (no inputs yet), plus
    // the segwit marker and flag that BDK's input weights do not include.
    let fixed = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![],
        output: vec![TxOut {
            value: amount,
            script_pubkey: recipient.clone(),
        }],
    };
    let fixed_fee = fee_rate * (fixed.weight() + SEGWIT_MARKER_WEIGHT);
    // BDK adds the weight of an empty-witness input (with its empty witness's count byte);
    // the satisfaction is the witness itself.
    let witness = input_prediction(scheme).weight() - Weight::from_vb_unchecked(1);
    let optional: Vec<WeightedUtxo> = candidates
        .iter()
        .map(|c| WeightedUtxo {
            satisfaction_weight: witness,
            utxo: Utxo::Foreign {
                outpoint: c.outpoint,
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                psbt_input: Box::new(Input {
                    witness_utxo: Some(c.txout.clone()),
                    ..Input::default()
                }),
            },
        })
        .collect();
    let available: Amount = candidates.iter().map(|c| c.txout.value).sum();
    let target = amount
        .checked_add(fixed_fee)
        .ok_or(SpendError::InvalidAmount(amount.to_sat()))?;
    let algorithm = BranchAndBoundCoinSelection::<SingleRandomDraw>::default();
    let result = algorithm
        .coin_select(vec![], optional, fee_rate, target, change_script, rng)
        .map_err(|e| SpendError::InsufficientFunds {
            needed: e.needed.to_sat(),
            available: available.to_sat(),
            utxos: candidates.len(),
        })?;
    let selected: Vec<usize> = result
        .selected
        .iter()
        .filter_map(|u| candidates.iter().position(|c| c.outpoint == u.outpoint()))
        .collect();
    let inputs_total: Amount = selected.iter().map(|&i| candidates[i].txout.value).sum();
    let change = match result.excess {
        Excess::Change { amount: change, .. } => Some(change),
        Excess::NoChange { .. } => None,
    };
    let fee = inputs_total
        .checked_sub(amount + change.unwrap_or(Amount::ZERO))
        .ok_or_else(|| SpendError::InsufficientFunds {
            needed: target.to_sat(),
            available: available.to_sat(),
            utxos: candidates.len(),
        })?;
    Ok(Selection {
        selected,
        change,
        fee,
        inputs_total,
    })
}

/// An unsigned PSBT for a selection: the selected inputs with their derivation records, the
/// payment, and the change (with its derivation record, so every signer's policy sees it as
/// the wallet's own) to `change_path` of `wallet`.
pub fn build_spend(
    wallet: &WalletKey,
    candidates: &[Candidate],
    selection: &Selection,
    recipient: &ScriptBuf,
    amount: Amount,
    change_path: &DerivationPath,
) -> Result<Psbt, WalletError> {
    let inputs: Vec<SpendableOutput> = selection
        .selected
        .iter()
        .map(|&i| {
            let c = &candidates[i];
            SpendableOutput {
                outpoint: c.outpoint,
                txout: c.txout.clone(),
                funding_transaction: c.funding_transaction.clone(),
                wallet: wallet.clone(),
                path: c.path.clone(),
            }
        })
        .collect();
    let mut payments = vec![Payment {
        script_pubkey: recipient.clone(),
        amount,
        owner: None,
    }];
    if let Some(change) = selection.change {
        payments.push(Payment {
            script_pubkey: wallet.script_pubkey(change_path)?,
            amount: change,
            owner: Some((wallet.clone(), change_path.clone())),
        });
    }
    build_psbt(&inputs, &payments)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{keys::Chain, policy};
    use mpc_protocols::signature::PublicKey;
    use rand::{rngs::StdRng, SeedableRng};

    fn wallet(scheme: Scheme) -> WalletKey {
        // The generator point as a master key: any valid point will do for the public side.
        let g = bitcoin::secp256k1::PublicKey::from_secret_key(
            &bitcoin::secp256k1::Secp256k1::new(),
            &bitcoin::secp256k1::SecretKey::from_slice(&[7; 32]).unwrap(),
        );
        WalletKey::new(scheme, PublicKey(g.serialize()), [3; 32], Network::Regtest).unwrap()
    }

    fn candidates(w: &WalletKey, amounts: &[u64]) -> Vec<Candidate> {
        amounts
            .iter()
            .enumerate()
            .map(|(i, &a)| {
                let path = Chain::Receive.path(i as u32).unwrap();
                let funded = crate::build::synthetic_funding(
                    w,
                    &path,
                    Amount::from_sat(a),
                    &format!("test {i}"),
                )
                .unwrap();
                Candidate {
                    outpoint: funded.outpoint,
                    txout: funded.txout,
                    funding_transaction: funded.funding_transaction,
                    path,
                }
            })
            .collect()
    }

    fn recipient(w: &WalletKey) -> ScriptBuf {
        w.chain_address(Chain::Receive, 999)
            .unwrap()
            .script_pubkey()
    }

    fn change(w: &WalletKey) -> ScriptBuf {
        w.chain_address(Chain::Change, 0).unwrap().script_pubkey()
    }

    /// The fee pays at least the requested rate for the signed transaction's predicted weight,
    /// and the amounts add up.
    fn check(scheme: Scheme, amounts: &[u64], pay: u64, rate: f64) -> Selection {
        let w = wallet(scheme);
        let cands = candidates(&w, amounts);
        let to = recipient(&w);
        let sel = select_coins(
            scheme,
            &cands,
            &to,
            Amount::from_sat(pay),
            fee_rate(rate).unwrap(),
            &change(&w),
            &mut StdRng::seed_from_u64(1),
        )
        .unwrap();
        let mut outputs = vec![&to];
        let ch = change(&w);
        if sel.change.is_some() {
            outputs.push(&ch);
        }
        let weight = predicted_weight(scheme, sel.selected.len(), &outputs);
        let required = (rate * weight.to_wu() as f64 / 4.0).ceil() as u64;
        assert!(
            sel.fee.to_sat() >= required,
            "{scheme}: fee {} below {rate} sat/vB x {} vB",
            sel.fee,
            weight.to_wu() as f64 / 4.0
        );
        if sel.change.is_some() {
            // With change, the fee is the rate's fee plus rounding (up to a sat per part and
            // a weight unit per input), not a gift to miners.
            let slack = (sel.selected.len() as u64 + 3) * (rate / 4.0 + 1.0).ceil() as u64;
            assert!(
                sel.fee.to_sat() <= required + slack,
                "{scheme}: fee {} far above {required}",
                sel.fee
            );
        }
        assert_eq!(
            sel.inputs_total,
            Amount::from_sat(pay) + sel.fee + sel.change.unwrap_or(Amount::ZERO)
        );
        let mut seen = sel.selected.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), sel.selected.len(), "an output selected twice");
        sel
    }

    #[test]
    fn fees_cover_the_rate_for_both_script_types() {
        for scheme in [Scheme::Ecdsa, Scheme::Schnorr] {
            for rate in [0.1, 1.0, 2.5, 25.0, 300.0] {
                check(scheme, &[10_000_000], 4_000_000, rate);
                check(
                    scheme,
                    &[1_000_000, 2_000_000, 3_000_000, 4_000_000],
                    8_500_000,
                    rate,
                );
                check(scheme, &[500_000; 30], 6_000_000, rate);
                check(scheme, &[100_000, 30_000_000], 50_000, rate);
            }
        }
    }

    #[test]
    fn exact_match_needs_no_change() {
        // 50_000 + fee of a 1-in 1-out P2WPKH at 1 sat/vB (110 vB -> 110 sats, rounded up by
        // BDK per part): an output that covers it within the cost of change gives no change.
        let sel = check(Scheme::Ecdsa, &[50_120, 700_000], 50_000, 1.0);
        assert_eq!(sel.change, None);
        assert_eq!(sel.selected, vec![0]);
    }

    #[test]
    fn change_below_dust_goes_to_the_fee() {
        let sel = check(Scheme::Schnorr, &[50_300], 50_000, 1.0);
        assert_eq!(sel.change, None);
        assert_eq!(sel.fee, Amount::from_sat(300));
    }

    #[test]
    fn insufficient_funds_names_need_and_availability() {
        let w = wallet(Scheme::Ecdsa);
        let err = select_coins(
            Scheme::Ecdsa,
            &candidates(&w, &[10_000, 20_000]),
            &recipient(&w),
            Amount::from_sat(30_000),
            fee_rate(1.0).unwrap(),
            &change(&w),
            &mut StdRng::seed_from_u64(1),
        )
        .unwrap_err();
        match err {
            SpendError::InsufficientFunds {
                needed,
                available,
                utxos,
            } => {
                assert!(needed > 30_000, "{needed}");
                assert_eq!((available, utxos), (30_000, 2));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(err.code(), "insufficient_funds");
        let none = select_coins(
            Scheme::Ecdsa,
            &[],
            &recipient(&w),
            Amount::from_sat(1_000),
            fee_rate(1.0).unwrap(),
            &change(&w),
            &mut StdRng::seed_from_u64(1),
        )
        .unwrap_err();
        assert!(matches!(
            none,
            SpendError::InsufficientFunds { utxos: 0, .. }
        ));
    }

    #[test]
    fn dust_and_bad_amounts_are_refused() {
        for scheme in [Scheme::Ecdsa, Scheme::Schnorr] {
            let w = wallet(scheme);
            let to = recipient(&w);
            let dust = to.minimal_non_dust().to_sat();
            for (amount, code) in [
                (0, "invalid_amount"),
                (dust - 1, "dust_output"),
                (Amount::MAX_MONEY.to_sat() + 1, "invalid_amount"),
            ] {
                let err = select_coins(
                    scheme,
                    &candidates(&w, &[100_000]),
                    &to,
                    Amount::from_sat(amount),
                    fee_rate(1.0).unwrap(),
                    &change(&w),
                    &mut StdRng::seed_from_u64(1),
                )
                .unwrap_err();
                assert_eq!(err.code(), code, "{scheme} {amount}: {err}");
            }
            check(scheme, &[100_000], dust, 1.0);
        }
    }

    #[test]
    fn fee_rates_outside_the_range_are_refused() {
        for bad in [0.0, 0.05, -1.0, f64::NAN, f64::INFINITY, 10_001.0] {
            assert_eq!(
                fee_rate(bad).unwrap_err().code(),
                "invalid_fee_rate",
                "{bad}"
            );
        }
        assert_eq!(fee_rate(1.0).unwrap(), FeeRate::from_sat_per_vb_u32(1));
        assert_eq!(fee_rate(0.1).unwrap().to_sat_per_kwu(), 25);
    }

    #[test]
    fn recipients_are_checked_for_format_and_network() {
        let regtest = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
        let mainnet = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";
        let testnet = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx";
        assert!(parse_recipient(regtest, Network::Regtest).is_ok());
        assert!(parse_recipient(mainnet, Network::Bitcoin).is_ok());
        let err = parse_recipient(mainnet, Network::Regtest).unwrap_err();
        assert_eq!(err.code(), "wrong_network");
        assert!(err.to_string().contains("mainnet"), "{err}");
        assert_eq!(
            parse_recipient(testnet, Network::Regtest)
                .unwrap_err()
                .code(),
            "wrong_network"
        );
        for bad in [
            "",
            "not an address",
            "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt081",
        ] {
            assert_eq!(
                parse_recipient(bad, Network::Regtest).unwrap_err().code(),
                "invalid_address",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn built_spend_pays_change_to_the_wallet_and_passes_policy() {
        for scheme in [Scheme::Ecdsa, Scheme::Schnorr] {
            let w = wallet(scheme);
            let cands = candidates(&w, &[30_000, 45_000, 60_000]);
            let to = parse_recipient(
                "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
                Network::Regtest,
            )
            .unwrap()
            .script_pubkey();
            let amount = Amount::from_sat(70_000);
            let sel = select_coins(
                scheme,
                &cands,
                &to,
                amount,
                fee_rate(2.0).unwrap(),
                &change(&w),
                &mut StdRng::seed_from_u64(9),
            )
            .unwrap();
            let change_path = Chain::Change.path(4).unwrap();
            let psbt = build_spend(&w, &cands, &sel, &to, amount, &change_path).unwrap();
            // Every input is the wallet's, at its path, and the signer's analysis agrees.
            let jobs = crate::analyze(&psbt, &[&w], &crate::TxRules::default()).unwrap();
            assert_eq!(jobs.len(), sel.selected.len());
            let within_gap = policy::ChangeRule {
                next_unused: vec![0],
                gap: 20,
            };
            let summary =
                policy::summarize(&psbt, &[&w], &vec![0; jobs.len()], &within_gap).unwrap();
            assert_eq!(summary.payments_sats, amount.to_sat());
            assert_eq!(summary.fee_sats, sel.fee.to_sat());
            let change_value = sel.change.expect("change").to_sat();
            assert_eq!(summary.change_sats, change_value);
            let out = &psbt.unsigned_tx.output[1];
            assert_eq!(out.script_pubkey, w.script_pubkey(&change_path).unwrap());
            assert!(
                summary.fee_rate_sat_vb >= 2.0,
                "{}",
                summary.fee_rate_sat_vb
            );
            // The same output beyond the change gap is a payment, not change.
            let beyond_gap = policy::ChangeRule {
                next_unused: vec![0],
                gap: 4,
            };
            let summary =
                policy::summarize(&psbt, &[&w], &vec![0; jobs.len()], &beyond_gap).unwrap();
            assert_eq!(summary.change_sats, 0);
            assert_eq!(summary.payments_sats, amount.to_sat() + change_value);
        }
    }
}
