//! Wallet layer end to end in one process: addresses, descriptors, PSBT analysis, threshold
//! signing, finalization, and verification with Bitcoin Core's interpreter.

use std::str::FromStr;

use miniscript::{descriptor::DescriptorPublicKey, Descriptor};
use mpc_bitcoin::{
    bitcoin::{
        hashes::Hash,
        psbt::{Psbt, PsbtSighashType},
        secp256k1::{self, ecdsa, PublicKey as SecpPublicKey, Secp256k1, SecretKey},
        sighash::{EcdsaSighashType, TapSighashType},
        Address, Amount, CompressedPublicKey, Network, OutPoint, ScriptBuf, Transaction, TxOut,
        Txid, Witness,
    },
    build::{build_psbt, synthetic_funding, Payment, SpendableOutput},
    finalize::finalize,
    local::{sign_psbt, EcdsaMode, LocalWallet},
    psbt::{analyze, spent_outputs},
    verify::verify_transaction,
    Chain, InputProblem, TxRules, WalletError, WalletKey,
};
use mpc_protocols::{DerivationPath, PartyIndex};

fn path(s: &str) -> DerivationPath {
    s.parse().unwrap()
}

fn external_address(network: Network) -> Address {
    let secp = Secp256k1::new();
    let sk = SecretKey::from_slice(&[7u8; 32]).unwrap();
    Address::p2wpkh(
        &CompressedPublicKey(SecpPublicKey::from_secret_key(&secp, &sk)),
        network,
    )
}

#[test]
fn addresses_on_every_network() {
    let (_, ecdsa) = mpc_testkit::ecdsa_wallet(2, 3, Network::Regtest);
    let (_, schnorr) = mpc_testkit::schnorr_wallet(2, 3, Network::Regtest);
    for (network, hrp) in [
        (Network::Bitcoin, "bc1"),
        (Network::Testnet, "tb1"),
        (Network::Signet, "tb1"),
        (Network::Regtest, "bcrt1"),
    ] {
        for (wallet, witness_version) in [(&ecdsa, "q"), (&schnorr, "p")] {
            let wallet = WalletKey {
                network,
                ..wallet.clone()
            };
            let addr = wallet.chain_address(Chain::Receive, 0).unwrap();
            assert!(
                addr.to_string()
                    .starts_with(&format!("{hrp}{witness_version}")),
                "{addr}"
            );
            // The address parses back as valid for that network only.
            let parsed = Address::from_str(&addr.to_string()).unwrap();
            assert!(parsed.is_valid_for_network(network));
            if network == Network::Bitcoin {
                assert!(!parsed.is_valid_for_network(Network::Testnet));
            }
            // Receive and change addresses differ, and so do indices.
            assert_ne!(addr, wallet.chain_address(Chain::Change, 0).unwrap());
            assert_ne!(addr, wallet.chain_address(Chain::Receive, 1).unwrap());
        }
    }
    assert!(ecdsa.xpub().unwrap().to_string().starts_with("tpub"));
    let mainnet = WalletKey {
        network: Network::Bitcoin,
        ..ecdsa
    };
    assert!(mainnet.xpub().unwrap().to_string().starts_with("xpub"));
}

#[test]
fn descriptors_have_checksums_and_derive_the_same_addresses() {
    let (_, ecdsa) = mpc_testkit::ecdsa_wallet(2, 3, Network::Testnet);
    let (_, schnorr) = mpc_testkit::schnorr_wallet(2, 3, Network::Testnet);
    for (wallet, prefix) in [(&ecdsa, "wpkh("), (&schnorr, "tr(")] {
        for chain in [Chain::Receive, Chain::Change] {
            let descriptor = wallet.descriptor(chain).unwrap().to_string();
            assert!(descriptor.starts_with(prefix), "{descriptor}");
            let (body, checksum) = descriptor.split_once('#').expect("checksum present");
            assert_eq!(checksum.len(), 8);
            assert!(body.contains(&format!("/{}/*", chain.index())));
            // miniscript validates the checksum when parsing it back; a wrong one is refused.
            let parsed = Descriptor::<DescriptorPublicKey>::from_str(&descriptor).unwrap();
            let mut wrong = descriptor.clone();
            let last = wrong.pop().unwrap();
            wrong.push(if last == 'q' { 'p' } else { 'q' });
            assert!(Descriptor::<DescriptorPublicKey>::from_str(&wrong).is_err());
            for i in 0..5 {
                let from_descriptor = parsed
                    .at_derivation_index(i)
                    .unwrap()
                    .address(Network::Testnet)
                    .unwrap();
                assert_eq!(from_descriptor, wallet.chain_address(chain, i).unwrap());
            }
        }
    }
}

#[test]
fn bip32_derivation_agrees_with_the_threshold_shares() {
    let (ecdsa_shares, ecdsa) = mpc_testkit::ecdsa_wallet(2, 3, Network::Regtest);
    let (schnorr_shares, schnorr) = mpc_testkit::schnorr_wallet(2, 3, Network::Regtest);
    for p in ["m", "m/0/0", "m/0/1", "m/1/0", "m/7/2147483647", "m/1/2/3"] {
        let p = path(p);
        assert_eq!(
            ecdsa.derive(&p).unwrap().serialize(),
            ecdsa_shares[1].derive_public_key(&p).unwrap().0,
            "ECDSA {p}"
        );
        assert_eq!(
            schnorr.derive(&p).unwrap().serialize(),
            schnorr_shares[2].derive_public_key(&p).unwrap().0,
            "Schnorr {p}"
        );
    }
}

/// A regtest transaction spending synthetic outputs of both wallets at several paths.
struct Fixture {
    ecdsa_shares: Vec<mpc_protocols::ecdsa::EcdsaKeyShare>,
    ecdsa: WalletKey,
    schnorr_shares: Vec<mpc_protocols::schnorr::SchnorrKeyShare>,
    schnorr: WalletKey,
}

impl Fixture {
    fn new() -> Self {
        let (ecdsa_shares, ecdsa) = mpc_testkit::ecdsa_wallet(2, 3, Network::Regtest);
        let (schnorr_shares, schnorr) = mpc_testkit::schnorr_wallet(2, 3, Network::Regtest);
        Self {
            ecdsa_shares,
            ecdsa,
            schnorr_shares,
            schnorr,
        }
    }

    fn wallets(&self) -> [LocalWallet<'_>; 2] {
        [
            LocalWallet::Ecdsa {
                key: &self.ecdsa,
                shares: &self.ecdsa_shares,
            },
            LocalWallet::Schnorr {
                key: &self.schnorr,
                shares: &self.schnorr_shares,
            },
        ]
    }

    fn inputs(&self, spec: &[(bool, &str)]) -> Vec<SpendableOutput> {
        spec.iter()
            .enumerate()
            .map(|(k, (is_ecdsa, p))| {
                let wallet = if *is_ecdsa {
                    &self.ecdsa
                } else {
                    &self.schnorr
                };
                synthetic_funding(
                    wallet,
                    &path(p),
                    Amount::from_sat(100_000 + k as u64),
                    &format!("input {k}"),
                )
                .unwrap()
            })
            .collect()
    }

    fn psbt(&self, inputs: &[SpendableOutput], outputs: usize) -> Psbt {
        let total: u64 = inputs.iter().map(|i| i.txout.value.to_sat()).sum();
        let fee = 5_000;
        let each = (total - fee) / outputs as u64;
        let mut payments: Vec<Payment> = (0..outputs - 1)
            .map(|_| Payment {
                script_pubkey: external_address(Network::Regtest).script_pubkey(),
                amount: Amount::from_sat(each),
                owner: None,
            })
            .collect();
        let change = path("m/1/0");
        payments.push(Payment {
            script_pubkey: self.ecdsa.script_pubkey(&change).unwrap(),
            amount: Amount::from_sat(total - fee - each * (outputs as u64 - 1)),
            owner: Some((self.ecdsa.clone(), change)),
        });
        build_psbt(inputs, &payments).unwrap()
    }
}

fn signed_mixed_transaction(fx: &Fixture) -> (Transaction, Vec<TxOut>) {
    let inputs = fx.inputs(&[
        (true, "m/0/0"),
        (false, "m/0/0"),
        (true, "m/1/5"),
        (false, "m/0/3"),
    ]);
    let mut psbt = fx.psbt(&inputs, 2);
    let signed = sign_psbt(
        &mut psbt,
        &fx.wallets(),
        &PartyIndex::list(&[0, 2]),
        EcdsaMode::Presignature,
    )
    .unwrap();
    assert_eq!(signed.len(), 4);
    let spent = spent_outputs(&psbt).unwrap();
    let tx = finalize(&mut psbt).unwrap();
    (tx, spent)
}

#[test]
fn mixed_p2wpkh_and_p2tr_transaction_passes_bitcoinconsensus() {
    let fx = Fixture::new();
    let (tx, spent) = signed_mixed_transaction(&fx);
    verify_transaction(&tx, &spent).unwrap();
    assert_eq!(
        tx.input[0].witness.len(),
        2,
        "P2WPKH witness: signature, key"
    );
    assert_eq!(
        tx.input[1].witness.len(),
        1,
        "P2TR key path witness: signature"
    );
    assert_eq!(
        tx.input[1].witness.nth(0).unwrap().len(),
        64,
        "SIGHASH_DEFAULT: 64 bytes"
    );
}

#[test]
fn tampered_signatures_wrong_amounts_and_high_s_are_caught() {
    let fx = Fixture::new();
    let (tx, spent) = signed_mixed_transaction(&fx);

    for input in 0..tx.input.len() {
        // Flip one bit in the middle of the signature.
        let mut bad = tx.clone();
        let mut items: Vec<Vec<u8>> = bad.input[input]
            .witness
            .iter()
            .map(<[u8]>::to_vec)
            .collect();
        items[0][10] ^= 0x01;
        bad.input[input].witness = Witness::from_slice(&items);
        let err = verify_transaction(&bad, &spent).unwrap_err();
        assert!(
            matches!(err, WalletError::Verification { input: i, .. } if i == input),
            "{err}"
        );

        // The same signatures against a different spent amount (both BIP-143 and BIP-341
        // commit to amounts).
        let mut wrong = spent.clone();
        wrong[input].value += Amount::from_sat(1);
        assert!(
            verify_transaction(&tx, &wrong).is_err(),
            "input {input} amount"
        );
    }

    // High-S: (r, n - s) is the same signature mathematically; consensus accepts it, relay
    // policy (BIP-146) does not, and neither do we.
    let mut high_s = tx.clone();
    let items: Vec<Vec<u8>> = high_s.input[0].witness.iter().map(<[u8]>::to_vec).collect();
    let (sighash_byte, der) = items[0].split_last().unwrap();
    let low = ecdsa::Signature::from_der(der).unwrap().serialize_compact();
    let s = secp256k1::Scalar::from_be_bytes(low[32..].try_into().unwrap()).unwrap();
    let neg_s = SecretKey::from_slice(&s.to_be_bytes())
        .unwrap()
        .negate()
        .secret_bytes();
    let mut compact = low;
    compact[32..].copy_from_slice(&neg_s);
    let mut high = ecdsa::Signature::from_compact(&compact)
        .unwrap()
        .serialize_der()
        .to_vec();
    high.push(*sighash_byte);
    high_s.input[0].witness = Witness::from_slice(&[high, items[1].clone()]);
    let err = verify_transaction(&high_s, &spent).unwrap_err();
    assert!(err.to_string().contains("high-S"), "{err}");
}

/// Only the types that commit to every input and output are signed: SIGHASH_ALL for P2WPKH
/// (explicit or absent), SIGHASH_DEFAULT or SIGHASH_ALL for P2TR.
#[test]
fn the_sighash_types_that_commit_to_the_whole_transaction_sign_and_verify() {
    let fx = Fixture::new();
    let inputs = fx.inputs(&[
        (true, "m/0/0"),
        (true, "m/0/1"),
        (false, "m/0/0"),
        (false, "m/0/1"),
        (false, "m/0/2"),
    ]);
    let mut psbt = fx.psbt(&inputs, 2);
    psbt.inputs[1].sighash_type = Some(PsbtSighashType::from(EcdsaSighashType::All));
    psbt.inputs[3].sighash_type = Some(PsbtSighashType::from(TapSighashType::Default));
    psbt.inputs[4].sighash_type = Some(PsbtSighashType::from(TapSighashType::All));
    sign_psbt(
        &mut psbt,
        &fx.wallets(),
        &PartyIndex::list(&[1, 2]),
        EcdsaMode::Interactive,
    )
    .unwrap();
    let spent = spent_outputs(&psbt).unwrap();
    let tx = finalize(&mut psbt).unwrap();
    verify_transaction(&tx, &spent).unwrap();
    // SIGHASH_ALL on Taproot carries the type byte (65 bytes); DEFAULT does not (64).
    assert_eq!(tx.input[3].witness.nth(0).unwrap().len(), 64);
    assert_eq!(tx.input[4].witness.nth(0).unwrap().len(), 65);
}

#[test]
fn inputs_that_are_not_ours_are_refused_each_with_its_reason() {
    let fx = Fixture::new();
    let (_, stranger) = mpc_testkit::schnorr_wallet(2, 3, Network::Regtest);
    let mut inputs = fx.inputs(&[(true, "m/0/0"), (false, "m/0/1")]);
    inputs.push(
        synthetic_funding(
            &stranger,
            &path("m/0/0"),
            Amount::from_sat(50_000),
            "stranger",
        )
        .unwrap(),
    );
    inputs.push(fx.inputs(&[(true, "m/0/2")]).remove(0));
    inputs.push(fx.inputs(&[(true, "m/0/3")]).remove(0));
    inputs.push(fx.inputs(&[(false, "m/0/4")]).remove(0));
    let mut psbt = fx.psbt(&inputs, 2);
    // Input 3: claims our path m/0/9 but spends the script of m/0/2.
    let (key, _) = psbt.inputs[3].bip32_derivation.pop_first().unwrap();
    let fp = fx.ecdsa.fingerprint().unwrap();
    psbt.inputs[3]
        .bip32_derivation
        .insert(key, (fp, "m/0/9".parse().unwrap()));
    // Input 4: no spent output.
    psbt.inputs[4].witness_utxo = None;
    psbt.inputs[4].non_witness_utxo = None;
    // Input 5: a P2PKH script, which we never sign (its funding transaction pays one).
    let p2pkh = ScriptBuf::new_p2pkh(&mpc_bitcoin::bitcoin::PubkeyHash::all_zeros());
    let mut funding = inputs[5].funding_transaction.clone().unwrap();
    funding.output[0].script_pubkey = p2pkh.clone();
    psbt.unsigned_tx.input[5].previous_output.txid = funding.compute_txid();
    psbt.inputs[5].witness_utxo = Some(funding.output[0].clone());
    psbt.inputs[5].non_witness_utxo = Some(funding);

    let err = analyze(&psbt, &[&fx.ecdsa, &fx.schnorr], &TxRules::default()).unwrap_err();
    let WalletError::Inputs(errors) = &err else {
        panic!("{err}")
    };
    // Missing UTXOs are found before anything else is looked at.
    assert_eq!(errors.len(), 1, "{err}");
    assert_eq!(errors[0].problem, InputProblem::MissingUtxo);
    assert_eq!(errors[0].input, 4);

    psbt.inputs[4].witness_utxo = Some(inputs[4].txout.clone());
    psbt.inputs[4].non_witness_utxo = inputs[4].funding_transaction.clone();
    let err = analyze(&psbt, &[&fx.ecdsa, &fx.schnorr], &TxRules::default()).unwrap_err();
    let WalletError::Inputs(errors) = &err else {
        panic!("{err}")
    };
    let problems: Vec<(usize, &InputProblem)> =
        errors.iter().map(|e| (e.input, &e.problem)).collect();
    assert_eq!(problems.len(), 3, "{err}");
    assert_eq!(problems[0], (2, &InputProblem::NotOurs));
    assert!(
        matches!(problems[1], (3, InputProblem::ScriptMismatch { .. })),
        "{err}"
    );
    assert!(
        matches!(problems[2], (5, InputProblem::UnsupportedScript(_))),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("input 2") && text.contains("input 3") && text.contains("input 5"),
        "{text}"
    );

    // Signing with only the ECDSA wallet refuses the Schnorr input too.
    let only_ecdsa = fx.inputs(&[(true, "m/0/0"), (false, "m/0/1")]);
    let psbt = fx.psbt(&only_ecdsa, 2);
    let err = analyze(&psbt, &[&fx.ecdsa], &TxRules::default()).unwrap_err();
    assert!(err.to_string().contains("input 1"), "{err}");
}

#[test]
fn a_utxo_that_does_not_match_its_outpoint_is_refused() {
    let fx = Fixture::new();
    let inputs = fx.inputs(&[(true, "m/0/0")]);
    let mut psbt = fx.psbt(&inputs, 2);
    // A non_witness_utxo whose txid is not the one the input spends.
    let unrelated = Transaction {
        version: mpc_bitcoin::bitcoin::transaction::Version::TWO,
        lock_time: mpc_bitcoin::bitcoin::absolute::LockTime::ZERO,
        input: vec![],
        output: vec![inputs[0].txout.clone()],
    };
    psbt.inputs[0].witness_utxo = None;
    psbt.inputs[0].non_witness_utxo = Some(unrelated);
    psbt.unsigned_tx.input[0].previous_output = OutPoint {
        txid: Txid::all_zeros(),
        vout: 0,
    };
    let err = analyze(&psbt, &[&fx.ecdsa], &TxRules::default()).unwrap_err();
    assert!(
        matches!(&err, WalletError::Inputs(e) if e[0].problem == InputProblem::UtxoMismatch),
        "{err}"
    );
}

#[test]
fn malformed_psbts_get_clear_errors() {
    for bad in ["", "not base64!", "cHNidP8=", "AAAA"] {
        let err = mpc_bitcoin::psbt::parse_psbt(bad).unwrap_err();
        assert!(matches!(err, WalletError::MalformedPsbt(_)), "{bad}: {err}");
    }
}
