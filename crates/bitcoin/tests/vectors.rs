//! Standard test vectors: BIP-341 wallet vectors and the BIP-143 native P2WPKH example.

use mpc_bitcoin::{
    bitcoin::{
        consensus::deserialize,
        hex::FromHex,
        key::TweakedPublicKey,
        secp256k1::XOnlyPublicKey,
        sighash::{EcdsaSighashType, SighashCache, TapSighashType},
        Address, Amount, Network, ScriptBuf, Transaction, TxOut,
    },
    psbt::{segwit_v0_preimage, taproot_key_spend},
    Scheme, WalletKey,
};
use mpc_protocols::{schnorr::taproot_output_key, signature::verify_bip340, DerivationPath};
use serde_json::Value;

fn bip341() -> Value {
    let path = mpc_testkit::vectors_dir().join("bip341-wallet-test-vectors.json");
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn hex32(v: &Value) -> [u8; 32] {
    <[u8; 32]>::from_hex(v.as_str().unwrap()).unwrap()
}

#[test]
fn bip341_script_pubkey_vectors_give_the_same_tweak_output_key_and_address() {
    let cases = bip341()["scriptPubKey"].as_array().unwrap().clone();
    assert!(cases.len() >= 7);
    for (i, case) in cases.iter().enumerate() {
        let internal = hex32(&case["given"]["internalPubkey"]);
        let root = case["intermediary"]["merkleRoot"]
            .as_str()
            .map(|_| hex32(&case["intermediary"]["merkleRoot"]));
        let (tweak, output) = taproot_output_key(&internal, root).unwrap();
        assert_eq!(
            tweak,
            hex32(&case["intermediary"]["tweak"]),
            "case {i}: tweak"
        );
        assert_eq!(
            output,
            hex32(&case["intermediary"]["tweakedPubkey"]),
            "case {i}: output key"
        );
        let address = Address::p2tr_tweaked(
            TweakedPublicKey::dangerous_assume_tweaked(
                XOnlyPublicKey::from_slice(&output).unwrap(),
            ),
            Network::Bitcoin,
        );
        assert_eq!(
            address.to_string(),
            case["expected"]["bip350Address"].as_str().unwrap(),
            "case {i}"
        );
        assert_eq!(
            address.script_pubkey().to_hex_string(),
            case["expected"]["scriptPubKey"].as_str().unwrap(),
            "case {i}"
        );
        if root.is_none() {
            // Key-path-only: our wallet's own address path (rust-bitcoin's BIP-341 tweak with an
            // empty tree) gives the same address. An x-only key is the even-y point: 0x02 || x.
            let mut master = [2u8; 33];
            master[1..].copy_from_slice(&internal);
            let wallet = WalletKey::new(
                Scheme::Schnorr,
                mpc_protocols::signature::PublicKey(master),
                [0; 32],
                Network::Bitcoin,
            )
            .unwrap();
            assert_eq!(
                wallet.address(&DerivationPath::root()).unwrap(),
                address,
                "case {i}"
            );
        }
    }
}

#[test]
fn bip341_key_path_spending_vectors_give_the_same_sig_msg_and_sighash() {
    let v = bip341();
    let mut checked = 0;
    for case in v["keyPathSpending"].as_array().unwrap() {
        let tx: Transaction = deserialize(
            &Vec::<u8>::from_hex(case["given"]["rawUnsignedTx"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        let spent: Vec<TxOut> = case["given"]["utxosSpent"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| TxOut {
                value: Amount::from_sat(u["amountSats"].as_u64().unwrap()),
                script_pubkey: ScriptBuf::from_hex(u["scriptPubKey"].as_str().unwrap()).unwrap(),
            })
            .collect();
        let mut cache = SighashCache::new(&tx);
        for input in case["inputSpending"].as_array().unwrap() {
            let index = input["given"]["txinIndex"].as_u64().unwrap() as usize;
            let hash_type = TapSighashType::from_consensus_u8(
                input["given"]["hashType"].as_u64().unwrap() as u8,
            )
            .unwrap();
            let (sig_msg, sighash) =
                taproot_key_spend(&mut cache, index, &spent, hash_type).unwrap();
            let expected = &input["intermediary"];
            assert_eq!(
                hex::encode(&sig_msg),
                expected["sigMsg"].as_str().unwrap(),
                "input {index}"
            );
            assert_eq!(sighash, hex32(&expected["sigHash"]), "input {index}");
            // The vector's signature verifies, by our BIP-340 path, against the spent output key.
            let witness =
                Vec::<u8>::from_hex(input["expected"]["witness"][0].as_str().unwrap()).unwrap();
            let sig: [u8; 64] = witness[..64].try_into().unwrap();
            let output_key: [u8; 32] = spent[index].script_pubkey.as_bytes()[2..]
                .try_into()
                .unwrap();
            verify_bip340(&output_key, &sighash, &sig).unwrap();
            let mut forged = sig;
            forged[63] ^= 1;
            assert!(verify_bip340(&output_key, &sighash, &forged).is_err());
            checked += 1;
        }
    }
    assert!(checked >= 7, "only {checked} inputs checked");
}

#[test]
fn bip143_native_p2wpkh_example() {
    // BIP-143, "Native P2WPKH": input 1 spends 6 BTC from a P2WPKH output, SIGHASH_ALL.
    let tx: Transaction = deserialize(&Vec::<u8>::from_hex(
        "0100000002fff7f7881a8099afa6940d42d1e7f6362bec38171ea3edf433541db4e4ad969f0000000000eeffffff\
         ef51e1b804cc89d182d279655c3aa89e815b1b309fe287d9b2b55d57b90ec68a0100000000ffffffff02202cb206\
         000000001976a9148280b37df378db99f66f85c95a783a76ac7a6d5988ac9093510d000000001976a9143bde42db\
         ee7e4dbe6a21b2d50ce2f0167faa815988ac11000000",
    )
    .unwrap())
    .unwrap();
    let script = ScriptBuf::from_hex("00141d0f172a0ecb48aee1be1f2687d2963ae33f71a1").unwrap();
    let mut cache = SighashCache::new(&tx);
    let preimage = segwit_v0_preimage(
        &mut cache,
        1,
        &script,
        Amount::from_sat(600_000_000),
        EcdsaSighashType::All,
    )
    .unwrap();
    assert_eq!(
        hex::encode(preimage.as_bytes()),
        "0100000096b827c8483d4e9b96712b6713a7b68d6e8003a781feba36c31143470b4efd3752b0a642eea2fb7ae638c36f6252b6750293dbe574a806984b8e4d8548339a3bef51e1b804cc89d182d279655c3aa89e815b1b309fe287d9b2b55d57b90ec68a010000001976a9141d0f172a0ecb48aee1be1f2687d2963ae33f71a188ac0046c32300000000ffffffff863ef3e1a92afbfdb97f31ad0fc7683ee943e9abcf2501590ff8f6551f47e5e51100000001000000"
    );
    assert_eq!(
        hex::encode(preimage.sighash()),
        "c37af31116d1b27caf68aae9e3ac82f1477929014d5b917657d0eb49478cb670"
    );
}
