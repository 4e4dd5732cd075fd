//! What every signer's check stops, tried the way an attacker holding a signer token (or the
//! coordinating node) would: weak sighash types, misstated amounts, transactions no node
//! accepts, and change outside the wallet's change chain. Each case names the input, output
//! or rule it is refused for, with the stable code the API reports.

use mpc_bitcoin::{
    bitcoin::{
        key::TapTweak,
        psbt::{Psbt, PsbtSighashType},
        script::Builder,
        secp256k1::{schnorr, Message, Secp256k1},
        transaction::Version,
        Amount, Network, OutPoint, ScriptBuf, TxOut,
    },
    build::{build_psbt, synthetic_funding, Payment, SpendableOutput},
    finalize::finalize,
    local::{sign_psbt, EcdsaMode, LocalWallet},
    policy::{summarize, ChangeRule, Policy},
    psbt::analyze,
    InputProblem, JobMessage, TxProblem, TxRules, WalletError, WalletKey,
};
use mpc_protocols::{DerivationPath, PartyIndex};

struct Wallets {
    ecdsa: WalletKey,
    schnorr_shares: Vec<mpc_protocols::schnorr::SchnorrKeyShare>,
    schnorr: WalletKey,
}

fn wallets() -> Wallets {
    let (_, ecdsa) = mpc_testkit::ecdsa_wallet(2, 3, Network::Regtest);
    let (schnorr_shares, schnorr) = mpc_testkit::schnorr_wallet(2, 3, Network::Regtest);
    Wallets {
        ecdsa,
        schnorr_shares,
        schnorr,
    }
}

fn path(s: &str) -> DerivationPath {
    s.parse().unwrap()
}

fn funding(wallet: &WalletKey, p: &str, sats: u64) -> SpendableOutput {
    synthetic_funding(
        wallet,
        &path(p),
        Amount::from_sat(sats),
        &format!("{p} {sats} {}", wallet.master_key),
    )
    .unwrap()
}

/// Pays `pay` sats to a stranger's address from `inputs`, the rest minus a 2,000-sat fee to
/// change at m/1/0 of the first input's wallet.
fn spend(inputs: &[SpendableOutput], pay: u64) -> Psbt {
    let (_, stranger) = mpc_testkit::schnorr_wallet(2, 3, Network::Regtest);
    let total: u64 = inputs.iter().map(|i| i.txout.value.to_sat()).sum();
    let owner = inputs[0].wallet.clone();
    let change = path("m/1/0");
    build_psbt(
        inputs,
        &[
            Payment {
                script_pubkey: stranger.script_pubkey(&path("m/0/0")).unwrap(),
                amount: Amount::from_sat(pay),
                owner: None,
            },
            Payment {
                script_pubkey: owner.script_pubkey(&change).unwrap(),
                amount: Amount::from_sat(total - pay - 2_000),
                owner: Some((owner, change)),
            },
        ],
    )
    .unwrap()
}

fn input_problems(
    result: Result<Vec<mpc_bitcoin::SigningJob>, WalletError>,
) -> Vec<(usize, InputProblem)> {
    match result {
        Err(WalletError::Inputs(errors)) => {
            errors.into_iter().map(|e| (e.input, e.problem)).collect()
        }
        other => panic!("expected refused inputs, got {other:?}"),
    }
}

fn tx_problem(result: Result<Vec<mpc_bitcoin::SigningJob>, WalletError>) -> TxProblem {
    match result {
        Err(WalletError::InvalidTransaction(problem)) => problem,
        other => panic!("expected an invalid transaction, got {other:?}"),
    }
}

// ---- class 1: signature hash types --------------------------------------------------------

/// NONE and SINGLE leave outputs uncommitted, ANYONECANPAY the other inputs: a signature of
/// any of them could be reused in a transaction no policy saw. Every such type, and every
/// non-standard byte, is refused on the input that asks for it, for both script types.
#[test]
fn every_sighash_type_but_all_is_refused_with_the_input_and_type_named() {
    let w = wallets();
    let inputs = [
        funding(&w.ecdsa, "m/0/0", 60_000),
        funding(&w.schnorr, "m/0/0", 60_000),
    ];
    let base = spend(&inputs, 50_000);
    let both = [&w.ecdsa, &w.schnorr];
    // P2WPKH: everything but ALL (0x01); 0x00 is DEFAULT, which only Taproot has.
    for raw in [
        0x00,
        0x02,
        0x03,
        0x04,
        0x41,
        0x81,
        0x82,
        0x83,
        0xff,
        0x0100_0001,
    ] {
        let mut psbt = base.clone();
        psbt.inputs[0].sighash_type = Some(PsbtSighashType::from_u32(raw));
        let problems = input_problems(analyze(&psbt, &both, &TxRules::default()));
        assert_eq!(
            problems,
            [(0, InputProblem::SighashTypeRefused(raw))],
            "{raw:#x}"
        );
        assert_eq!(problems[0].1.code(), "sighash_type_refused");
        assert!(problems[0].1.to_string().contains(&format!("{raw:#x}")));
    }
    // P2TR: everything but DEFAULT (0x00) and ALL (0x01).
    for raw in [0x02, 0x03, 0x04, 0x81, 0x82, 0x83, 0xff, 0x0100_0000] {
        let mut psbt = base.clone();
        psbt.inputs[1].sighash_type = Some(PsbtSighashType::from_u32(raw));
        let problems = input_problems(analyze(&psbt, &both, &TxRules::default()));
        assert_eq!(
            problems,
            [(1, InputProblem::SighashTypeRefused(raw))],
            "{raw:#x}"
        );
    }
    // The types that commit to everything pass.
    let mut psbt = base.clone();
    psbt.inputs[0].sighash_type = Some(PsbtSighashType::from_u32(0x01));
    psbt.inputs[1].sighash_type = Some(PsbtSighashType::from_u32(0x00));
    assert_eq!(analyze(&psbt, &both, &TxRules::default()).unwrap().len(), 2);
    psbt.inputs[1].sighash_type = Some(PsbtSighashType::from_u32(0x01));
    assert_eq!(analyze(&psbt, &both, &TxRules::default()).unwrap().len(), 2);
}

// ---- class 2: amounts taken on trust -------------------------------------------------------

/// The attack: one unsigned transaction, two requests, each overstating a different input's
/// amount (so each request's fee looks small); each request's honest signature is for the
/// input stated truly, and the two combine into a transaction whose real fee nobody approved.
/// A P2WPKH amount is only ever taken from the previous transaction, by its txid.
#[test]
fn misstated_p2wpkh_amounts_are_refused_however_they_are_misstated() {
    let w = wallets();
    let inputs = [
        funding(&w.ecdsa, "m/0/0", 100_000),
        funding(&w.ecdsa, "m/0/1", 100_000),
    ];
    // Pays 10,000 and leaves 150,000 of the real 200,000 as fee if change is cut to 38,000.
    let mut honest = spend(&inputs, 10_000);
    honest.unsigned_tx.output[1].value = Amount::from_sat(38_000);
    let rules = TxRules::default();
    let ours = [&w.ecdsa];
    for victim in 0..2 {
        // 1. witness_utxo alone, overstated: nothing proves it.
        let mut psbt = honest.clone();
        psbt.inputs[victim].non_witness_utxo = None;
        psbt.inputs[victim].witness_utxo.as_mut().unwrap().value = Amount::from_sat(250_000);
        assert_eq!(
            input_problems(analyze(&psbt, &ours, &rules)),
            [(victim, InputProblem::AmountUnproven)]
        );
        // 2. The previous transaction kept, witness_utxo overstated beside it.
        let mut psbt = honest.clone();
        psbt.inputs[victim].witness_utxo.as_mut().unwrap().value = Amount::from_sat(250_000);
        assert_eq!(
            input_problems(analyze(&psbt, &ours, &rules)),
            [(victim, InputProblem::WitnessUtxoMismatch)]
        );
        // 3. A forged previous transaction: its txid is no longer the outpoint's.
        let mut psbt = honest.clone();
        let prev = psbt.inputs[victim].non_witness_utxo.as_mut().unwrap();
        prev.output[0].value = Amount::from_sat(250_000);
        psbt.inputs[victim].witness_utxo = None;
        assert_eq!(
            input_problems(analyze(&psbt, &ours, &rules)),
            [(victim, InputProblem::UtxoMismatch)]
        );
        // 4. No spent output at all.
        let mut psbt = honest.clone();
        psbt.inputs[victim].non_witness_utxo = None;
        psbt.inputs[victim].witness_utxo = None;
        assert_eq!(
            input_problems(analyze(&psbt, &ours, &rules)),
            [(victim, InputProblem::MissingUtxo)]
        );
    }
    // Told the truth, the signer sees the real fee, for its policy to judge.
    analyze(&honest, &ours, &rules).unwrap();
    let summary = summarize(&honest, &ours, &[0, 0], &change_rule(0)).unwrap();
    assert_eq!(summary.fee_sats, 152_000);
}

/// A P2TR input may carry `witness_utxo` alone: BIP-341 commits every signature to every
/// input's amount, so a misstated amount leaves the attacker with signatures no node accepts.
#[test]
fn a_misstated_taproot_amount_yields_only_invalid_signatures() {
    let w = wallets();
    let inputs = [
        funding(&w.schnorr, "m/0/0", 100_000),
        funding(&w.schnorr, "m/0/1", 100_000),
    ];
    let honest = spend(&inputs, 10_000);
    let true_jobs = analyze(&honest, &[&w.schnorr], &TxRules::default()).unwrap();
    let mut lied = honest.clone();
    for input in &mut lied.inputs {
        input.non_witness_utxo = None;
    }
    lied.inputs[1].witness_utxo.as_mut().unwrap().value = Amount::from_sat(250_000);
    let local = [LocalWallet::Schnorr {
        key: &w.schnorr,
        shares: &w.schnorr_shares,
    }];
    // The signer signs what it was told (the lie passes its checks)...
    sign_psbt(
        &mut lied,
        &local,
        &PartyIndex::list(&[0, 1]),
        EcdsaMode::Presignature,
    )
    .unwrap();
    let tx = finalize(&mut lied).unwrap();
    // ...and not one signature verifies for the real amounts.
    let secp = Secp256k1::verification_only();
    for job in &true_jobs {
        let JobMessage::Schnorr {
            sighash,
            internal_key,
            ..
        } = &job.message
        else {
            panic!("a Taproot job")
        };
        let (output_key, _) = internal_key.tap_tweak(&secp, None);
        let witness = tx.input[job.input].witness.nth(0).unwrap();
        let signature = schnorr::Signature::from_slice(witness).unwrap();
        let message = Message::from_digest(*sighash);
        assert!(
            secp.verify_schnorr(&signature, &message, &output_key.to_x_only_public_key())
                .is_err(),
            "input {} verifies for the real amounts",
            job.input
        );
    }
}

// ---- class 3: transactions no node would accept ---------------------------------------------

/// A valid two-input Taproot spend, to break one rule at a time.
fn valid(w: &Wallets) -> Psbt {
    spend(
        &[
            funding(&w.schnorr, "m/0/0", 100_000),
            funding(&w.schnorr, "m/0/1", 100_000),
        ],
        50_000,
    )
}

fn refused(psbt: &Psbt, w: &Wallets, rules: &TxRules) -> TxProblem {
    tx_problem(analyze(psbt, &[&w.schnorr, &w.ecdsa], rules))
}

#[test]
fn consensus_rules_that_need_no_chain_are_checked_before_signing() {
    let w = wallets();
    let rules = TxRules::default();
    analyze(&valid(&w), &[&w.schnorr], &rules).unwrap();

    // The same outpoint spent twice.
    let mut psbt = valid(&w);
    psbt.unsigned_tx
        .input
        .push(psbt.unsigned_tx.input[0].clone());
    psbt.inputs.push(psbt.inputs[0].clone());
    let problem = refused(&psbt, &w, &rules);
    assert_eq!(problem, TxProblem::DuplicateInput { input: 2, first: 0 });
    assert_eq!(
        (problem.code(), problem.input()),
        ("duplicate_input", Some(2))
    );

    // No outputs.
    let mut psbt = valid(&w);
    psbt.unsigned_tx.output.clear();
    psbt.outputs.clear();
    assert_eq!(refused(&psbt, &w, &rules).code(), "no_outputs");

    // An output above 21 million BTC, and outputs summing above it.
    let mut psbt = valid(&w);
    psbt.unsigned_tx.output[0].value = Amount::MAX_MONEY + Amount::from_sat(1);
    let problem = refused(&psbt, &w, &rules);
    assert_eq!(
        (problem.code(), problem.output()),
        ("output_value_out_of_range", Some(0))
    );
    let mut psbt = valid(&w);
    psbt.unsigned_tx.output[0].value = Amount::MAX_MONEY;
    psbt.unsigned_tx.output[1].value = Amount::MAX_MONEY;
    assert_eq!(
        refused(&psbt, &w, &rules),
        TxProblem::OutputsTotalOutOfRange
    );

    // A spent amount above 21 million BTC (Taproot: stated in witness_utxo).
    let mut psbt = valid(&w);
    psbt.inputs[1].non_witness_utxo = None;
    psbt.inputs[1].witness_utxo.as_mut().unwrap().value = Amount::MAX_MONEY + Amount::from_sat(1);
    assert_eq!(
        refused(&psbt, &w, &rules),
        TxProblem::InputValueOutOfRange { input: 1 }
    );

    // The null outpoint, which only a coinbase spends.
    let mut psbt = valid(&w);
    psbt.unsigned_tx.input[1].previous_output = OutPoint::null();
    psbt.inputs[1].non_witness_utxo = None;
    assert_eq!(
        refused(&psbt, &w, &rules),
        TxProblem::NullPrevout { input: 1 }
    );

    // More out than in.
    let mut psbt = valid(&w);
    psbt.unsigned_tx.output[0].value = Amount::from_sat(150_000);
    assert_eq!(refused(&psbt, &w, &rules).code(), "outputs_exceed_inputs");

    // Too many inputs for this node's limit: refused before anything else.
    let few = TxRules {
        max_inputs: 1,
        ..TxRules::default()
    };
    assert_eq!(
        refused(&valid(&w), &w, &few),
        TxProblem::TooManyInputs { count: 2, max: 1 }
    );

    // Larger than a block without its witness.
    let mut psbt = valid(&w);
    let out = psbt.unsigned_tx.output[0].clone();
    psbt.unsigned_tx.output = vec![
        TxOut {
            value: Amount::from_sat(1_000),
            ..out
        };
        30_000
    ];
    psbt.outputs = vec![Default::default(); 30_000];
    assert_eq!(refused(&psbt, &w, &rules).code(), "too_large");
}

#[test]
fn relay_policy_rules_are_checked_before_signing() {
    let w = wallets();
    let rules = TxRules::default();

    // Version 3 and 0 are not standard here.
    for version in [0, 3, 0x7fff_ffff] {
        let mut psbt = valid(&w);
        psbt.unsigned_tx.version = Version(version);
        assert_eq!(
            refused(&psbt, &w, &rules),
            TxProblem::NonStandardVersion { version }
        );
    }
    // Over 400,000 weight once signed.
    let mut psbt = valid(&w);
    let out = psbt.unsigned_tx.output[0].clone();
    psbt.unsigned_tx.output = vec![
        TxOut {
            value: Amount::from_sat(10),
            ..out
        };
        3_000
    ];
    psbt.outputs = vec![Default::default(); 3_000];
    assert_eq!(refused(&psbt, &w, &rules).code(), "nonstandard_weight");
    // A dust output.
    let mut psbt = valid(&w);
    psbt.unsigned_tx.output[0].value = Amount::from_sat(329);
    let problem = refused(&psbt, &w, &rules);
    assert_eq!(
        problem,
        TxProblem::Dust {
            output: 0,
            value: 329,
            minimum: 330
        }
    );
    assert_eq!(problem.code(), "dust_output");
    // A non-standard script (anyone-can-spend OP_TRUE), allowed only when the policy says so.
    let mut psbt = valid(&w);
    psbt.unsigned_tx.output[0].script_pubkey = Builder::new()
        .push_opcode(mpc_bitcoin::bitcoin::opcodes::OP_TRUE)
        .into_script();
    assert_eq!(refused(&psbt, &w, &rules).code(), "nonstandard_output");
    let lenient = TxRules {
        allow_nonstandard_outputs: true,
        ..TxRules::default()
    };
    analyze(&psbt, &[&w.schnorr], &lenient).unwrap();
    // OP_RETURN: one of up to 83 bytes; a longer one, or a second one, is refused.
    let op_return = |bytes: usize| {
        let data = vec![0u8; bytes];
        let push: &mpc_bitcoin::bitcoin::script::PushBytes = data.as_slice().try_into().unwrap();
        ScriptBuf::new_op_return(push)
    };
    let with_outputs = |extra: Vec<ScriptBuf>| {
        let mut psbt = valid(&w);
        for script in extra {
            psbt.unsigned_tx.output.push(TxOut {
                value: Amount::ZERO,
                script_pubkey: script,
            });
            psbt.outputs.push(Default::default());
        }
        psbt
    };
    analyze(&with_outputs(vec![op_return(80)]), &[&w.schnorr], &rules).unwrap();
    assert_eq!(
        refused(&with_outputs(vec![op_return(81)]), &w, &rules),
        TxProblem::DataCarrierTooLarge {
            output: 2,
            bytes: 84,
            max: 83
        }
    );
    assert_eq!(
        refused(&with_outputs(vec![op_return(1), op_return(1)]), &w, &rules),
        TxProblem::SecondDataCarrier { output: 3 }
    );
    // Under 65 bytes without witness: one input, one bare OP_RETURN.
    let mut psbt = valid(&w);
    psbt.unsigned_tx.input.truncate(1);
    psbt.inputs.truncate(1);
    psbt.unsigned_tx.output = vec![TxOut {
        value: Amount::ZERO,
        script_pubkey: ScriptBuf::new_op_return([]),
    }];
    psbt.outputs = vec![Default::default()];
    assert_eq!(refused(&psbt, &w, &rules).code(), "too_small");
}

// ---- class 4: change on any path -------------------------------------------------------------

fn change_rule(next_unused: u32) -> ChangeRule {
    ChangeRule {
        next_unused: vec![next_unused],
        gap: Policy::default().change_gap,
    }
}

/// Change counts as the wallet's own only on m/1/i, i within the gap of the next unused change
/// index, with a record that derives the output's script; anything else is spending, which
/// the limits count and the allow-list refuses.
#[test]
fn change_is_only_on_the_change_chain_within_the_gap() {
    let w = wallets();
    let input = funding(&w.schnorr, "m/0/0", 500_000);
    let with_change_at = |p: &str| {
        let owner = (w.schnorr.clone(), path(p));
        build_psbt(
            std::slice::from_ref(&input),
            &[Payment {
                script_pubkey: w.schnorr.script_pubkey(&path(p)).unwrap(),
                amount: Amount::from_sat(490_000),
                owner: Some(owner),
            }],
        )
        .unwrap()
    };
    let ours = [&w.schnorr];
    let change_sats = |psbt: &Psbt, next_unused: u32| {
        summarize(psbt, &ours, &[0], &change_rule(next_unused))
            .unwrap()
            .change_sats
    };
    assert_eq!(change_sats(&with_change_at("m/1/0"), 0), 490_000);
    assert_eq!(change_sats(&with_change_at("m/1/19"), 0), 490_000);
    // Beyond the gap: spending, until the wallet has used change up to there.
    assert_eq!(change_sats(&with_change_at("m/1/20"), 0), 0);
    assert_eq!(change_sats(&with_change_at("m/1/20"), 1), 490_000);
    assert_eq!(change_sats(&with_change_at("m/1/500"), 0), 0);
    // Off the change chain: the receive chain, another chain, deeper, the master key.
    for p in ["m/0/3", "m/2/0", "m/1/0/0", "m/7/99/3"] {
        assert_eq!(change_sats(&with_change_at(p), 0), 0, "{p}");
    }
    // A record on the change chain that does not derive the output's script.
    let mut wrong = with_change_at("m/1/1");
    wrong.unsigned_tx.output[0].script_pubkey = w.schnorr.script_pubkey(&path("m/1/2")).unwrap();
    assert_eq!(change_sats(&wrong, 0), 0);

    // Counted as spending, the allow-list and the amount limit refuse it.
    let policy = Policy {
        max_amount_per_tx_sats: Some(100_000),
        allowed_destinations: Some(vec![]),
        ..Policy::default()
    };
    let far = with_change_at("m/1/500");
    let summary = summarize(&far, &ours, &[0], &change_rule(0)).unwrap();
    let err = policy
        .check(
            &far,
            &summary,
            &ours,
            &Default::default(),
            mpc_bitcoin::Network::Regtest,
        )
        .unwrap_err();
    assert_eq!(err.rule, "max_amount_per_tx_sats");
    let near = with_change_at("m/1/2");
    let summary = summarize(&near, &ours, &[0], &change_rule(0)).unwrap();
    policy
        .check(
            &near,
            &summary,
            &ours,
            &Default::default(),
            mpc_bitcoin::Network::Regtest,
        )
        .unwrap();
    assert_eq!(summary.change.len(), 1);
    assert_eq!((summary.change[0].wallet, summary.change[0].index), (0, 2));
}

/// The previous transaction of a Taproot input is optional but, when present, binding.
#[test]
fn a_taproot_input_with_a_previous_transaction_must_match_it() {
    let w = wallets();
    let mut psbt = valid(&w);
    psbt.inputs[0].witness_utxo.as_mut().unwrap().value = Amount::from_sat(1);
    assert_eq!(
        input_problems(analyze(&psbt, &[&w.schnorr], &TxRules::default())),
        [(0, InputProblem::WitnessUtxoMismatch)]
    );
}
