//! Payments through `/transactions` on node 1, signed by the processes: the UTXO registry,
//! one payment per scheme, then the change spent by two payments racing for it.

use mpc_api::payments::TransactionRequest;
use mpc_bitcoin::{
    bitcoin::{Address, OutPoint, Transaction},
    build::SpendableOutput,
    Chain,
};
use mpc_testkit::fund;
use mpc_wallet::client::ClientError;
use serde_json::Value;

use crate::{
    common::{check_payment, join_all, registration},
    Cluster, Wallets,
};

/// What the payments left for the next steps.
pub struct Paid {
    pub t_paid: Value,
    pub t_tx: Transaction,
    pub t_recipient: Address,
}

pub fn payment(wallet: &mpc_types::WalletId, to: &Address, amount_sats: u64) -> TransactionRequest {
    TransactionRequest {
        wallet_id: wallet.clone(),
        recipient: to.to_string(),
        amount_sats,
        fee_rate_sat_vb: 2.0,
    }
}

fn report_signing(what: &str, answer: &Value, tx: &Transaction) {
    eprintln!(
        "[api test] fact: {what} payment (/transactions): {} inputs, {} vB, fee {} sats, signers {}, {:.0} ms inside the cluster",
        tx.input.len(),
        tx.vsize(),
        answer["spend"]["fee_sats"],
        answer["signers"],
        answer["duration_ms"].as_f64().unwrap_or(-1.0)
    );
}

/// Outputs registered (again: a no-op) and listed, then an ECDSA payment of 70 000 sats that
/// needs both of its outputs and a Taproot one of 30 000 from one output, each checked
/// independently; the registry then lists the spent outputs and the change.
pub async fn payments_of_both_schemes(c: &Cluster, w: &Wallets) -> Paid {
    let e_funded = fund(&w.ekey, &[("m/0/0", 60_000), ("m/0/1", 40_000)]);
    let t_funded = fund(&w.tkey, &[("m/0/0", 80_000)]);
    for (id, funded) in [(&w.eid, &e_funded), (&w.tid, &t_funded)] {
        let registered = c.signer.register_utxos(id, &registration(funded)).await;
        assert_eq!(registered.unwrap().len(), funded.len());
        c.signer
            .register_utxos(id, &registration(funded))
            .await
            .expect("registering the same data again is a no-op");
        let list = c.viewer.utxos(id, false).await.unwrap();
        assert_eq!(&list.wallet_id, id);
        let total: u64 = funded.iter().map(|o| o.txout.value.to_sat()).sum();
        assert_eq!(list.available_sats, total);
        assert_eq!(list.next_change_index, 0);
        assert_eq!(list.utxos.len(), funded.len());
        for o in funded {
            let u = list
                .utxos
                .iter()
                .find(|u| u.outpoint == o.outpoint.to_string())
                .expect("registered output listed");
            assert_eq!(u.amount_sats, o.txout.value.to_sat());
            assert_eq!(u.path, o.path.to_string());
            assert_eq!(u.script_pubkey, o.txout.script_pubkey.to_hex_string());
            assert_eq!(
                (u.state.as_str(), u.origin.as_str()),
                ("available", "registered")
            );
        }
    }

    // ECDSA (P2WPKH): 70 000 sats needs both outputs, signed interactively; Taproot (P2TR):
    // 30 000 from its one output, by FROST. Each pays the other wallet.
    let e_recipient = w.tkey.chain_address(Chain::Receive, 5).unwrap();
    let t_recipient = w.ekey.chain_address(Chain::Receive, 5).unwrap();
    let mut answers = Vec::new();
    for (what, id, key, funded, to, amount, inputs, method) in [
        (
            "ECDSA",
            &w.eid,
            &w.ekey,
            &e_funded,
            &e_recipient,
            70_000,
            2,
            "interactive",
        ),
        (
            "Taproot",
            &w.tid,
            &w.tkey,
            &t_funded,
            &t_recipient,
            30_000,
            1,
            "frost",
        ),
    ] {
        let paid = c
            .signer
            .send_payment(&payment(id, to, amount))
            .await
            .unwrap_or_else(|e| panic!("{what} payment: {e}"));
        let tx = check_payment(&c.viewer, id, key, funded, to, amount, 0, &paid).await;
        report_signing(what, &paid, &tx);
        assert_eq!(tx.input.len(), inputs);
        let scheme = if method == "frost" {
            "frost"
        } else {
            "cggmp24"
        };
        assert!(
            paid["inputs"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["method"] == method && i["scheme"] == scheme),
            "{paid}"
        );
        answers.push((paid, tx));
    }
    let (t_paid, t_tx) = answers.pop().unwrap();
    let (e_paid, _) = answers.pop().unwrap();

    // The registry followed: the funding outputs are spent by the payment, the change is
    // registered and available, and the next change index moved on.
    for (id, key, funded, paid) in [
        (&w.eid, &w.ekey, &e_funded, &e_paid),
        (&w.tid, &w.tkey, &t_funded, &t_paid),
    ] {
        let list = c.viewer.utxos(id, true).await.unwrap();
        for o in funded {
            let u = list
                .utxos
                .iter()
                .find(|u| u.outpoint == o.outpoint.to_string())
                .unwrap();
            assert_eq!(u.state, "spent", "{u:?}");
            assert_eq!(paid["txid"], u.spent_by.as_deref().unwrap_or(""), "{u:?}");
        }
        let change = &paid["spend"]["change"];
        let change_outpoint = format!("{}:{}", paid["txid"].as_str().unwrap(), change["vout"]);
        let u = list
            .utxos
            .iter()
            .find(|u| u.outpoint == change_outpoint)
            .unwrap_or_else(|| panic!("change {change_outpoint} not registered: {list:?}"));
        assert_eq!(
            (u.origin.as_str(), u.state.as_str()),
            ("change", "available")
        );
        assert_eq!(change["address"], u.address.as_str());
        assert_eq!(change["amount_sats"], list.available_sats);
        assert_eq!(list.next_change_index, 1);
        let next = key.chain_address(Chain::Change, 1).unwrap().to_string();
        assert_eq!(list.next_change_address, next);
        let unspent = c.viewer.utxos(id, false).await.unwrap();
        assert_eq!(unspent.utxos.len(), 1);
    }
    Paid {
        t_paid,
        t_tx,
        t_recipient,
    }
}

/// The change is spendable, and an output is spent once: two payments at once from the
/// Taproot wallet's one output, its change, get one signature and one refusal.
pub async fn change_spent_by_concurrent_payments(c: &Cluster, w: &Wallets, paid: &Paid) {
    let vout = paid.t_paid["spend"]["change"]["vout"].as_u64().unwrap() as u32;
    let t_change = SpendableOutput {
        outpoint: OutPoint {
            txid: paid.t_tx.compute_txid(),
            vout,
        },
        txout: paid.t_tx.output[vout as usize].clone(),
        funding_transaction: Some(paid.t_tx.clone()),
        wallet: w.tkey.clone(),
        path: "m/1/0".parse().unwrap(),
    };
    let request = payment(&w.tid, &paid.t_recipient, 20_000);
    let racing = join_all(vec![
        c.signer.send_payment(&request),
        c.signer.send_payment(&request),
    ])
    .await;
    let (won, lost): (Vec<_>, Vec<_>) = racing.into_iter().partition(Result::is_ok);
    assert_eq!((won.len(), lost.len()), (1, 1), "{won:?} {lost:?}");
    match &lost[0] {
        Err(ClientError::Api { status, code, .. }) => {
            assert!(
                matches!(code.as_str(), "insufficient_funds" | "utxo_busy"),
                "{code}"
            );
            assert!(matches!(status, 409 | 422), "{status}");
            eprintln!("[api test] fact: concurrent payments from one output: one signed, one {status} {code}");
        }
        other => panic!("the losing payment: {other:?}"),
    }
    let Some(Ok(second)) = won.into_iter().next() else {
        panic!("no winning payment")
    };
    check_payment(
        &c.viewer,
        &w.tid,
        &w.tkey,
        std::slice::from_ref(&t_change),
        &paid.t_recipient,
        20_000,
        1,
        &second,
    )
    .await;
}
