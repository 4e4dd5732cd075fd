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

/// When approvals are needed: `above_sats` and `outside_allow_list` are alternatives (either
/// one calls for them), neither means always, a wallet list limits them; with
/// `outside_allow_list`, the allow-list asks for approvals instead of refusing.
#[test]
fn approvals_are_required_where_the_rule_says() {
    use mpc_bitcoin::approval::{ApprovalPolicy, Approver};
    use mpc_types::WalletId;
    let (_, key) = mpc_testkit::schnorr_wallet(2, 3, Network::Regtest);
    let (_, friend) = mpc_testkit::schnorr_wallet(2, 3, Network::Regtest);
    let (_, stranger) = mpc_testkit::schnorr_wallet(2, 3, Network::Regtest);
    let rule = ApprovalPolicy {
        required: 1,
        approvers: vec![Approver {
            name: "a".into(),
            public_key: hex::encode([0u8; 32]),
        }],
        ..ApprovalPolicy::default()
    };
    let mut policy = Policy {
        allowed_destinations: Some(vec![friend
            .chain_address(Chain::Receive, 0)
            .unwrap()
            .to_string()]),
        approvals: rule,
        ..Policy::default()
    };
    let wallets = [&key];
    let w = [WalletId::must("w")];
    let needs = |policy: &Policy, p: &mpc_bitcoin::bitcoin::psbt::Psbt| {
        let summary = summarize(p, &wallets, &[0], &first_change()).unwrap();
        let outside = policy
            .first_outside_allow_list(p, &summary, &wallets)
            .is_some();
        let checked = policy.check(
            p,
            &summary,
            &wallets,
            &HashMap::new(),
            mpc_bitcoin::Network::Regtest,
        );
        (
            policy.approvals.requires(&w, &summary, outside),
            checked.map_err(|v| v.rule),
        )
    };
    let small_to_friend = psbt(&key, 10_000, 50_000, 1_000, &friend);
    let big_to_friend = psbt(&key, 90_000, 50_000, 1_000, &friend);
    let small_to_stranger = psbt(&key, 10_000, 50_000, 1_000, &stranger);
    // Neither condition: every transaction; the allow-list still refuses on its own.
    assert_eq!(needs(&policy, &small_to_friend), (true, Ok(())));
    assert_eq!(
        needs(&policy, &small_to_stranger),
        (true, Err("allowed_destinations"))
    );
    // Above an amount (payments + fee, change not counted).
    policy.approvals.above_sats = Some(50_000);
    assert_eq!(needs(&policy, &small_to_friend), (false, Ok(())));
    assert_eq!(needs(&policy, &big_to_friend), (true, Ok(())));
    // Or outside the allow-list, which then no longer refuses.
    policy.approvals.outside_allow_list = true;
    assert_eq!(needs(&policy, &small_to_friend), (false, Ok(())));
    assert_eq!(needs(&policy, &small_to_stranger), (true, Ok(())));
    assert_eq!(needs(&policy, &big_to_friend), (true, Ok(())));
    // Only the wallets listed.
    policy.approvals.wallets = vec![WalletId::must("other")];
    assert_eq!(needs(&policy, &small_to_stranger), (false, Ok(())));
    // Off: the allow-list refuses again.
    policy.approvals.required = 0;
    assert_eq!(
        needs(&policy, &small_to_stranger),
        (false, Err("allowed_destinations"))
    );
}

// ---- approvals: the message an approver signs, and the signer's check ----------------------

mod approvals {
    use ed25519_dalek::{Signer, SigningKey};
    use mpc_bitcoin::{
        approval::*,
        bitcoin::{hashes::Hash, psbt::Psbt, Amount, Network},
        build::{build_psbt, synthetic_funding, Payment},
        Chain,
    };
    use mpc_types::WalletId;
    use uuid::Uuid;

    fn psbt(funded: u64, pays: &[u64]) -> Psbt {
        let (_, key) = mpc_testkit::schnorr_wallet(2, 3, Network::Regtest);
        let inputs = synthetic_funding(
            &key,
            &"m/0/0".parse().unwrap(),
            Amount::from_sat(funded),
            "approval",
        )
        .unwrap();
        let payments: Vec<Payment> = pays
            .iter()
            .enumerate()
            .map(|(i, sats)| Payment {
                script_pubkey: key
                    .chain_address(Chain::Receive, i as u32 + 1)
                    .unwrap()
                    .script_pubkey(),
                amount: Amount::from_sat(*sats),
                owner: None,
            })
            .collect();
        build_psbt(&[inputs], &payments).unwrap()
    }

    /// Every field of the message changes it; the layout is the one ARCHITECTURE.md gives.
    #[test]
    fn the_message_binds_every_field() {
        let request = Uuid::from_u128(7);
        let wallets = vec![WalletId::must("w1")];
        let base = psbt(10_000, &[4_000, 5_000]);
        let m = |p: &Psbt, w: &[WalletId], r: Uuid, e: i64, d: Decision| {
            approval_message(p, w, r, e, d).unwrap()
        };
        let message = m(&base, &wallets, request, 1_000, Decision::Approve);
        assert!(message.starts_with(APPROVAL_DOMAIN));
        assert_eq!(message[APPROVAL_DOMAIN.len()], 1);
        assert_eq!(
            &message[APPROVAL_DOMAIN.len() + 1..][..16],
            request.as_bytes()
        );
        assert_eq!(&message[message.len() - 8..], &1_000i64.to_be_bytes());
        let mut txid = base.unsigned_tx.compute_txid().to_byte_array();
        txid.reverse();
        let fee_at = message.windows(32).position(|w| w == txid).unwrap() + 32;
        assert_eq!(&message[fee_at..fee_at + 8], &1_000u64.to_be_bytes());

        let others = [
            m(&base, &wallets, request, 1_000, Decision::Reject),
            m(
                &base,
                &[WalletId::must("w2")],
                request,
                1_000,
                Decision::Approve,
            ),
            m(&base, &[], request, 1_000, Decision::Approve),
            m(
                &base,
                &wallets,
                Uuid::from_u128(8),
                1_000,
                Decision::Approve,
            ),
            m(&base, &wallets, request, 1_001, Decision::Approve),
            m(
                &psbt(10_000, &[4_000, 5_001]),
                &wallets,
                request,
                1_000,
                Decision::Approve,
            ),
            m(
                &psbt(10_001, &[4_000, 5_000]),
                &wallets,
                request,
                1_000,
                Decision::Approve,
            ),
            m(
                &psbt(10_000, &[5_000, 4_000]),
                &wallets,
                request,
                1_000,
                Decision::Approve,
            ),
            m(
                &psbt(10_000, &[9_000]),
                &wallets,
                request,
                1_000,
                Decision::Approve,
            ),
        ];
        for (i, other) in others.iter().enumerate() {
            assert_ne!(other, &message, "case {i}");
        }
        // The wallet ids are length-prefixed: ["ab", "c"] is not ["a", "bc"].
        let ab = m(
            &base,
            &[WalletId::must("ab"), WalletId::must("c")],
            request,
            1_000,
            Decision::Approve,
        );
        let bc = m(
            &base,
            &[WalletId::must("a"), WalletId::must("bc")],
            request,
            1_000,
            Decision::Approve,
        );
        assert_ne!(ab, bc);
    }

    #[test]
    fn the_check_counts_distinct_listed_approvers_and_refuses_forgeries() {
        let keys: Vec<SigningKey> = (1..=4u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]))
            .collect();
        let public = |k: &SigningKey| hex::encode(k.verifying_key().as_bytes());
        let policy = ApprovalPolicy {
            required: 2,
            approvers: ["a", "b", "c"]
                .iter()
                .zip(&keys)
                .map(|(n, k)| Approver {
                    name: n.to_string(),
                    public_key: public(k),
                })
                .collect(),
            ..ApprovalPolicy::default()
        };
        policy.validate().unwrap();
        let message = b"the message";
        let by = |k: &SigningKey| SignedDecision {
            public_key: public(k),
            signature: hex::encode(k.sign(message).to_bytes()),
        };
        let rule = |approvals: &[SignedDecision], now: i64| {
            policy
                .check(message, approvals, 100, now)
                .map_err(|v| v.rule)
        };
        assert_eq!(
            rule(&[by(&keys[0]), by(&keys[1])], 99),
            Ok(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            rule(&[by(&keys[0]), by(&keys[1])], 100),
            Err(APPROVAL_EXPIRED)
        );
        assert_eq!(
            rule(&[by(&keys[0]), by(&keys[0])], 0),
            Err(APPROVALS_MISSING)
        );
        assert_eq!(
            rule(&[by(&keys[0]), by(&keys[3])], 0),
            Err(APPROVALS_MISSING)
        );
        let forged = SignedDecision {
            public_key: public(&keys[1]),
            ..by(&keys[3])
        };
        assert_eq!(rule(&[by(&keys[0]), forged], 0), Err(APPROVAL_INVALID));
        let garbage = SignedDecision {
            public_key: public(&keys[1]),
            signature: "zz".into(),
        };
        assert_eq!(rule(&[by(&keys[0]), garbage], 0), Err(APPROVAL_INVALID));

        // The config's own checks.
        let mut bad = policy.clone();
        bad.required = 4;
        assert!(bad.validate().unwrap_err().contains("only 3 approvers"));
        let mut bad = policy.clone();
        bad.approvers[2].name = "a".into();
        assert!(bad.validate().unwrap_err().contains("unique"));
        let mut bad = policy.clone();
        bad.approvers[2].public_key = bad.approvers[0].public_key.to_uppercase();
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("another approver's key"));
        let mut bad = policy;
        bad.approvers[2].public_key = "00".into();
        assert!(bad.validate().is_err());
    }
}
