//! Each spending-policy rule refuses what it should, names itself, and lets the rest through.

use std::collections::HashMap;

use mpc_bitcoin::{
    bitcoin::{Amount, Network},
    build::{build_psbt, synthetic_funding, Payment},
    policy::{summarize, ChangeRule, Policy},
    Chain, WalletKey,
};

fn psbt(
    key: &WalletKey,
    pay: u64,
    change: u64,
    fee: u64,
    to: &WalletKey,
) -> mpc_bitcoin::bitcoin::psbt::Psbt {
    let input = synthetic_funding(
        key,
        &Chain::Receive.path(0).unwrap(),
        Amount::from_sat(pay + change + fee),
        "p",
    )
    .unwrap();
    let change_path = Chain::Change.path(0).unwrap();
    let mut payments = vec![Payment {
        script_pubkey: to.chain_address(Chain::Receive, 0).unwrap().script_pubkey(),
        amount: Amount::from_sat(pay),
        owner: None,
    }];
    if change > 0 {
        payments.push(Payment {
            script_pubkey: key.script_pubkey(&change_path).unwrap(),
            amount: Amount::from_sat(change),
            owner: Some((key.clone(), change_path)),
        });
    }
    build_psbt(&[input], &payments).unwrap()
}

/// A wallet that has used no change index yet, with the default gap.
fn first_change() -> ChangeRule {
    ChangeRule {
        next_unused: vec![0],
        gap: Policy::default().change_gap,
    }
}

#[test]
fn every_rule_refuses_and_names_itself() {
    let (_, key) = mpc_testkit::schnorr_wallet(2, 3, Network::Regtest);
    let (_, friend) = mpc_testkit::schnorr_wallet(2, 3, Network::Regtest);
    let (_, stranger) = mpc_testkit::schnorr_wallet(2, 3, Network::Regtest);
    let policy = Policy {
        max_amount_per_tx_sats: Some(100_000),
        max_amount_per_24h_sats: Some(150_000),
        allowed_destinations: Some(vec![friend
            .chain_address(Chain::Receive, 0)
            .unwrap()
            .to_string()]),
        max_fee_sats: Some(5_000),
        max_fee_rate_sat_vb: Some(20.0),
        ..Policy::default()
    };
    let wallets = [&key];
    let check = |p: &mpc_bitcoin::bitcoin::psbt::Psbt, spent: u64| {
        let summary = summarize(p, &wallets, &[0], &first_change()).unwrap();
        policy
            .check(
                p,
                &summary,
                &wallets,
                &HashMap::from([(0, spent)]),
                mpc_bitcoin::Network::Regtest,
            )
            .map(|_| summary)
    };
    // Within limits; the change is recognised and not counted as spending.
    let ok = check(&psbt(&key, 50_000, 400_000, 1_000, &friend), 0).unwrap();
    assert_eq!(
        (ok.payments_sats, ok.change_sats, ok.fee_sats),
        (50_000, 400_000, 1_000)
    );
    assert_eq!(ok.leaving_by_wallet[&0], 51_000);
    fn rule<T: std::fmt::Debug>(
        r: Result<T, mpc_bitcoin::policy::PolicyViolation>,
    ) -> &'static str {
        r.unwrap_err().rule
    }
    assert_eq!(
        rule(check(&psbt(&key, 120_000, 0, 1_000, &friend), 0)),
        "max_amount_per_tx_sats"
    );
    assert_eq!(
        rule(check(&psbt(&key, 50_000, 0, 1_000, &friend), 120_000)),
        "max_amount_per_24h_sats"
    );
    assert_eq!(
        rule(check(&psbt(&key, 50_000, 0, 1_000, &stranger), 0)),
        "allowed_destinations"
    );
    assert_eq!(
        rule(check(&psbt(&key, 50_000, 0, 9_000, &friend), 0)),
        "max_fee_sats"
    );
    assert_eq!(
        rule(check(&psbt(&key, 50_000, 0, 4_000, &friend), 0)),
        "max_fee_rate_sat_vb"
    );
    // Change that claims our fingerprint but pays another script counts as spending.
    let mut fake = psbt(&key, 50_000, 60_000, 1_000, &friend);
    fake.unsigned_tx.output[1].script_pubkey = stranger
        .chain_address(Chain::Receive, 1)
        .unwrap()
        .script_pubkey();
    let summary = summarize(&fake, &wallets, &[0], &first_change()).unwrap();
    assert_eq!(summary.change_sats, 0);
    assert_eq!(
        rule(policy.check(
            &fake,
            &summary,
            &wallets,
            &HashMap::new(),
            mpc_bitcoin::Network::Regtest
        )),
        "max_amount_per_tx_sats"
    );
    // A node that serves only mainnet refuses regtest wallets.
    let mainnet_only = Policy {
        networks: vec![mpc_bitcoin::Network::Mainnet],
        ..Policy::default()
    };
    let p = psbt(&key, 1_000, 0, 500, &friend);
    let summary = summarize(&p, &wallets, &[0], &first_change()).unwrap();
    assert_eq!(
        rule(mainnet_only.check(
            &p,
            &summary,
            &wallets,
            &HashMap::new(),
            mpc_bitcoin::Network::Regtest
        )),
        "networks"
    );
    // The default policy refuses nothing on the cluster's network.
    assert!(Policy::default()
        .check(
            &p,
            &summary,
            &wallets,
            &HashMap::new(),
            mpc_bitcoin::Network::Regtest
        )
        .is_ok());
}
