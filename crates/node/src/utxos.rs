//! The UTXO registry and paying from it.
//!
//! A client registers a wallet's funding outputs (outpoint, derivation path, and the funding
//! transaction, or for P2TR at least the amount) with a node; the node derives the path's
//! script with the wallet's key, checks the funding transaction against the outpoint, and
//! stores both, so the registry only ever holds outputs the wallet can spend, and a payment's
//! PSBT can prove every P2WPKH input's amount to the signers (`non_witness_utxo`). To pay, the node selects registered
//! outputs (BDK's coin selection, in `mpc_bitcoin::spend`), reserves them and the wallet's
//! next change index in one store transaction (so concurrent requests never pick the same
//! output), builds the PSBT with change to `m/1/i`, and signs it like any other PSBT: every
//! signer checks it on its own. On success the inputs are marked spent and the change output
//! is registered; on failure the reservation is released.
//!
//! The registry is this node's: outputs registered through one node are spent through it.

use mpc_types::WalletId;
use std::str::FromStr;

use mpc_bitcoin::{
    bitcoin::{
        consensus, Address, Amount, FeeRate, OutPoint, Psbt, ScriptBuf, Transaction, TxOut, Txid,
    },
    spend::{self, Candidate, SpendError},
    Chain, Scheme, WalletKey,
};
use mpc_protocols::DerivationPath;
use mpc_store::{NewUtxo, Reservation, StoreError, UtxoRecord};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use uuid::Uuid;

use crate::{
    approvals::{RequestView, Submitted},
    keys::wallet_key,
    now_ms,
    signing::SignReport,
    Node, NodeError,
};

/// A reservation older than this is taken to belong to a request that died (the process
/// stopped mid-signing), and its outputs are spendable again. Longer than any signing run.
pub const RESERVATION_TTL_MS: i64 = 3_600_000;
/// The reservation under which a `psbt/sign` request holds the registered outputs it spends.
fn signing_hold(session: Uuid) -> String {
    format!("psbt/sign/{session}")
}

/// Most outputs registered in one request.
pub const MAX_REGISTER: usize = 1_000;
/// Attempts at selecting and reserving when a concurrent request took a selected output.
const RESERVE_ATTEMPTS: usize = 3;

/// Failures of the registry and of paying from it.
#[derive(Debug, thiserror::Error)]
pub enum UtxoError {
    /// The request cannot be paid as asked (funds, dust, address, network, fee rate).
    #[error(transparent)]
    Spend(#[from] SpendError),
    /// The registration is malformed or does not match the wallet.
    #[error("{0}")]
    Invalid(String),
    /// The outpoint is already registered with another wallet, amount or path.
    #[error("output {outpoint} is already registered with a different wallet, amount or path")]
    Duplicate { outpoint: String },
    /// Concurrent requests kept taking the selected outputs.
    #[error("output {outpoint} was taken by a concurrent request; try again")]
    Busy { outpoint: OutPoint },
    #[error(transparent)]
    Node(#[from] NodeError),
}

impl From<StoreError> for UtxoError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists { id, .. } => UtxoError::Duplicate { outpoint: id },
            other => UtxoError::Node(NodeError::Store(other)),
        }
    }
}

/// An output to register.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterUtxo {
    /// `txid:vout`.
    pub outpoint: String,
    /// The output's amount: taken from `funding_transaction` when that is given (and then
    /// checked against it if given too).
    #[serde(default)]
    pub amount_sats: Option<u64>,
    /// The wallet's derivation path that receives it, e.g. `m/0/3`.
    pub path: String,
    /// The transaction that created the output (consensus encoding, hex). Required for
    /// P2WPKH outputs: BIP-143 signatures commit only to their own input's amount, so every
    /// signer checks each amount against the previous transaction's txid.
    #[serde(default)]
    pub funding_transaction: Option<String>,
}

/// A registered output as clients see it.
#[derive(Debug, Clone, Serialize)]
pub struct UtxoInfo {
    pub outpoint: String,
    pub amount_sats: u64,
    pub path: String,
    pub address: String,
    pub script_pubkey: String,
    /// `registered` or `change`.
    pub origin: &'static str,
    /// `available`, `reserved` or `spent`.
    pub state: &'static str,
    pub spent_by: Option<String>,
    pub spent_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

/// A payment from a wallet's registered outputs. The recipient is an address string: which
/// network it must be on is the wallet's, known only once the wallet is read.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub wallet_id: WalletId,
    pub recipient: String,
    pub amount: Amount,
    pub fee_rate: FeeRate,
}

impl SendRequest {
    /// A request as clients state it (satoshis, sat/vB), checked once: a fee rate outside
    /// the accepted range is refused here.
    pub fn new(
        wallet_id: WalletId,
        recipient: String,
        amount_sats: u64,
        fee_rate_sat_vb: f64,
    ) -> Result<Self, UtxoError> {
        Ok(Self {
            wallet_id,
            recipient,
            amount: Amount::from_sat(amount_sats),
            fee_rate: spend::fee_rate(fee_rate_sat_vb)?,
        })
    }
}

/// The change output of a payment.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeOutput {
    pub vout: u32,
    pub index: u32,
    pub path: DerivationPath,
    pub address: String,
    /// Hex.
    pub script_pubkey: ScriptBuf,
    #[serde(
        rename = "amount_sats",
        with = "mpc_bitcoin::bitcoin::amount::serde::as_sat"
    )]
    pub amount: Amount,
}

/// What the payment spent and paid, beside the signing report.
#[derive(Debug, Clone, Serialize)]
pub struct SpendDetails {
    pub inputs: Vec<String>,
    pub inputs_sats: u64,
    pub recipient: String,
    pub amount_sats: u64,
    pub fee_sats: u64,
    /// Fee over the signed transaction's virtual size.
    pub fee_rate_sat_vb: f64,
    pub change: Option<ChangeOutput>,
}

/// A signed payment: the same report as `psbt/sign`, plus what was spent.
/// What became of a payment: sent, or waiting for approvals.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum SendOutcome {
    Sent(SendReport),
    Pending(RequestView),
}

#[derive(Debug, Clone, Serialize)]
pub struct SendReport {
    #[serde(flatten)]
    pub signed: SignReport,
    pub spend: SpendDetails,
}

fn utxo_info(record: &UtxoRecord, key: &WalletKey) -> UtxoInfo {
    // Empty for a script with no address form (none of the wallet's own is such).
    let address = Address::from_script(&record.script_pubkey, key.network)
        .map(|a| a.to_string())
        .unwrap_or_default();
    UtxoInfo {
        outpoint: record.outpoint.to_string(),
        amount_sats: record.amount.to_sat(),
        path: record.path.to_string(),
        address,
        script_pubkey: record.script_pubkey.to_hex_string(),
        origin: record.origin.as_str(),
        state: record.state.as_str(),
        spent_by: record.spent_by.clone(),
        spent_at_ms: record.spent_at,
        created_at_ms: record.created_at,
    }
}

/// A stored output as a coin-selection candidate (the store decoded the row; one that does not
/// decode fails the listing as corrupt instead of being skipped). The funding transaction is
/// attached after selection ([`Node::attach_funding`]).
fn candidate(record: &UtxoRecord) -> Candidate {
    Candidate {
        outpoint: record.outpoint,
        txout: TxOut {
            value: record.amount,
            script_pubkey: record.script_pubkey.clone(),
        },
        funding_transaction: None,
        path: record.path.clone(),
    }
}

/// Checks a registration's funding transaction: it decodes, has the outpoint's txid, and its
/// output there pays `script`. Returns the output's amount.
fn check_funding(
    raw: &str,
    outpoint: &OutPoint,
    script: &ScriptBuf,
) -> Result<(Transaction, Amount), String> {
    let funding: Transaction = consensus::encode::deserialize_hex(raw.trim())
        .map_err(|e| format!("funding_transaction does not decode: {e}"))?;
    if funding.compute_txid() != outpoint.txid {
        return Err(format!(
            "funding_transaction has txid {}, not the outpoint's {}",
            funding.compute_txid(),
            outpoint.txid
        ));
    }
    let out = usize::try_from(outpoint.vout)
        .ok()
        .and_then(|vout| funding.output.get(vout))
        .ok_or_else(|| format!("funding_transaction has no output {}", outpoint.vout))?;
    if &out.script_pubkey != script {
        return Err(format!(
            "output {} of the funding transaction does not pay the wallet's script at this path",
            outpoint.vout
        ));
    }
    let amount = out.value;
    Ok((funding, amount))
}

impl Node {
    /// Registers funding outputs of an active wallet, all or none. Each path must derive a
    /// script of the wallet; that script is what is stored and later spent.
    pub async fn register_utxos(
        &self,
        wallet_id: &WalletId,
        utxos: &[RegisterUtxo],
    ) -> Result<Vec<UtxoInfo>, UtxoError> {
        if utxos.is_empty() || utxos.len() > MAX_REGISTER {
            return Err(UtxoError::Invalid(format!(
                "register 1 to {MAX_REGISTER} outputs per request"
            )));
        }
        let record = self.active_wallet(wallet_id).await?;
        let key = wallet_key(&record)?;
        let mut rows = Vec::with_capacity(utxos.len());
        for (i, u) in utxos.iter().enumerate() {
            let bad = |what: String| UtxoError::Invalid(format!("utxos[{i}]: {what}"));
            let outpoint = OutPoint::from_str(u.outpoint.trim())
                .map_err(|e| bad(format!("outpoint {:?} is not txid:vout ({e})", u.outpoint)))?;
            let path = DerivationPath::from_str(&u.path)
                .map_err(|e| bad(format!("path {:?}: {e}", u.path)))?;
            let script = key.script_pubkey(&path).map_err(|e| bad(e.to_string()))?;
            let (funding, amount) = match &u.funding_transaction {
                Some(raw) => {
                    let (funding, amount) = check_funding(raw, &outpoint, &script).map_err(bad)?;
                    if u.amount_sats
                        .is_some_and(|claimed| claimed != amount.to_sat())
                    {
                        return Err(bad(format!(
                            "amount_sats {:?} is not the funding transaction's {} sats",
                            u.amount_sats,
                            amount.to_sat()
                        )));
                    }
                    (Some(funding), amount)
                }
                None if key.scheme == Scheme::Ecdsa => {
                    return Err(bad(
                        "funding_transaction is required for P2WPKH outputs: every signer \
                         checks the amount against the previous transaction"
                            .into(),
                    ))
                }
                None => (
                    None,
                    Amount::from_sat(u.amount_sats.ok_or_else(|| {
                        bad("amount_sats is required without funding_transaction".into())
                    })?),
                ),
            };
            if amount == Amount::ZERO || amount > Amount::MAX_MONEY {
                return Err(bad(format!(
                    "amount {} sats is out of range",
                    amount.to_sat()
                )));
            }
            rows.push(NewUtxo {
                outpoint,
                amount,
                path,
                script_pubkey: script,
                funding_transaction: funding,
            });
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = rows.iter().find(|r| !seen.insert(r.outpoint)) {
            return Err(UtxoError::Invalid(format!(
                "output {} appears twice in the request",
                dup.outpoint
            )));
        }
        self.store()
            .insert_utxos(wallet_id, &rows, now_ms())
            .await?;
        // The pool reads the registry: these paths now get presignatures (ECDSA wallets).
        info!(
            node = self.id().get(),
            wallet = %wallet_id,
            count = rows.len(),
            "registered outputs"
        );
        let registered: std::collections::HashSet<OutPoint> =
            rows.iter().map(|r| r.outpoint).collect();
        Ok(self
            .store()
            .utxos(wallet_id, true)
            .await?
            .iter()
            .filter(|r| registered.contains(&r.outpoint))
            .map(|r| utxo_info(r, &key))
            .collect())
    }

    /// A wallet's registered outputs, oldest first; spent ones only if asked.
    pub async fn utxos(
        &self,
        wallet_id: &WalletId,
        include_spent: bool,
    ) -> Result<Vec<UtxoInfo>, UtxoError> {
        let record = self
            .store()
            .wallet(wallet_id)
            .await?
            .ok_or_else(|| NodeError::NotFound(format!("wallet {wallet_id}")))?;
        let key = wallet_key(&record)?;
        Ok(self
            .store()
            .utxos(wallet_id, include_spent)
            .await?
            .iter()
            .map(|r| utxo_info(r, &key))
            .collect())
    }

    /// The wallet's next unused change index and its address.
    pub async fn next_change(&self, wallet_id: &WalletId) -> Result<(u32, Address), UtxoError> {
        let record = self.active_wallet(wallet_id).await?;
        let key = wallet_key(&record)?;
        let index = self.next_change_index(wallet_id).await?;
        let address = key
            .chain_address(Chain::Change, index)
            .map_err(NodeError::from)?;
        Ok((index, address))
    }

    /// Pays `amount` to `recipient` from the wallet's registered outputs, with change to
    /// its next change address, signed through the cluster.
    pub async fn send(&self, session: Uuid, req: &SendRequest) -> Result<SendOutcome, UtxoError> {
        let record = self.active_wallet(&req.wallet_id).await?;
        let key = wallet_key(&record)?;
        // Client mistakes first, before anything is selected or reserved.
        let recipient = spend::parse_recipient(&req.recipient, key.network)?.script_pubkey();
        let (fee_rate, amount) = (req.fee_rate, req.amount);
        let reservation = session.to_string();

        let mut attempt = 0;
        let (candidates, selection, change_index) = loop {
            attempt += 1;
            let now = now_ms();
            let stale = now - RESERVATION_TTL_MS;
            let candidates: Vec<Candidate> = self
                .store()
                .spendable_utxos(&req.wallet_id, stale)
                .await?
                .iter()
                .map(candidate)
                .collect();
            // All change scripts of a wallet have the same length, which is all selection
            // needs; the index itself is allocated with the reservation.
            let next = self.next_change_index(&req.wallet_id).await?;
            let change_script = key
                .script_pubkey(&Chain::Change.path(next).map_err(NodeError::from)?)
                .map_err(NodeError::from)?;
            let selection = spend::select_coins(
                key.scheme,
                &candidates,
                &recipient,
                amount,
                fee_rate,
                &change_script,
                &mut OsRng,
            )?;
            let outpoints: Vec<OutPoint> = selection
                .selected
                .iter()
                .map(|&i| candidates[i].outpoint)
                .collect();
            match self
                .store()
                .reserve_utxos(
                    &req.wallet_id,
                    &outpoints,
                    &reservation,
                    now,
                    stale,
                    selection.change.is_some(),
                )
                .await?
            {
                Reservation::Reserved { change_index } => {
                    if let Some(index) = change_index {
                        self.remember_change_next(&req.wallet_id, index + 1);
                    }
                    break (candidates, selection, change_index);
                }
                Reservation::Conflict { outpoint } if attempt >= RESERVE_ATTEMPTS => {
                    return Err(UtxoError::Busy { outpoint })
                }
                Reservation::Conflict { .. } => continue,
            }
        };

        let result = self
            .sign_selection(
                session,
                &req.wallet_id,
                &key,
                &candidates,
                &selection,
                &recipient,
                amount,
                change_index,
            )
            .await;
        match result {
            // Waiting for approvals: the outputs stay reserved (until the reservation's TTL;
            // the signed transaction marks them spent).
            Ok((Submitted::Pending(request), _)) => Ok(SendOutcome::Pending(request)),
            Ok((Submitted::Signed(signed), change)) => {
                let inputs: Vec<String> = selection
                    .selected
                    .iter()
                    .map(|&i| candidates[i].outpoint.to_string())
                    .collect();
                // The signed transaction is the change output's funding transaction.
                let change_row = change.as_ref().map(|c| NewUtxo {
                    outpoint: OutPoint::new(signed.txid, c.vout),
                    amount: c.amount,
                    path: c.path.clone(),
                    script_pubkey: c.script_pubkey.clone(),
                    funding_transaction: Some(signed.raw_transaction.clone()),
                });
                // The transaction is signed and verified: the client gets it even if this
                // bookkeeping fails (the reservation then expires after its TTL).
                if let Err(e) = self
                    .store()
                    .complete_spend(
                        &req.wallet_id,
                        &reservation,
                        signed.txid,
                        change_row.as_ref(),
                        now_ms(),
                    )
                    .await
                {
                    warn!(node = self.id().get(), txid = %signed.txid, error = %e, "could not record the spend");
                }
                let vsize = signed.raw_transaction.vsize().max(1);
                let spend = SpendDetails {
                    inputs,
                    inputs_sats: selection.inputs_total.to_sat(),
                    recipient: req.recipient.trim().to_string(),
                    amount_sats: amount.to_sat(),
                    fee_sats: selection.fee.to_sat(),
                    fee_rate_sat_vb: selection.fee.to_sat() as f64 / vsize as f64,
                    change,
                };
                Ok(SendOutcome::Sent(SendReport { signed, spend }))
            }
            Err(e) => {
                if let Err(release) = self.store().release_utxos(&reservation).await {
                    warn!(node = self.id().get(), error = %release, "could not release reserved outputs");
                }
                Err(e)
            }
        }
    }

    /// Builds the PSBT for a reserved selection and signs it.
    #[allow(clippy::too_many_arguments)]
    async fn sign_selection(
        &self,
        session: Uuid,
        wallet_id: &WalletId,
        key: &WalletKey,
        candidates: &[Candidate],
        selection: &spend::Selection,
        recipient: &ScriptBuf,
        amount: Amount,
        change_index: Option<u32>,
    ) -> Result<(Submitted, Option<ChangeOutput>), UtxoError> {
        let change_path = Chain::Change
            .path(change_index.unwrap_or(0))
            .map_err(NodeError::from)?;
        let candidates = self.attach_funding(candidates, selection).await?;
        let psbt = spend::build_spend(key, &candidates, selection, recipient, amount, &change_path)
            .map_err(NodeError::from)?;
        let change = match (selection.change, change_index) {
            (Some(value), Some(index)) => Some(ChangeOutput {
                vout: 1,
                index,
                address: key
                    .address(&change_path)
                    .map_err(NodeError::from)?
                    .to_string(),
                script_pubkey: key.script_pubkey(&change_path).map_err(NodeError::from)?,
                path: change_path.clone(),
                amount: value,
            }),
            _ => None,
        };
        let submitted = self
            .submit_psbt(session, std::slice::from_ref(wallet_id), &psbt.to_string())
            .await?;
        Ok((submitted, change))
    }

    /// The candidates with the stored funding transaction of each selected one attached.
    async fn attach_funding(
        &self,
        candidates: &[Candidate],
        selection: &spend::Selection,
    ) -> Result<Vec<Candidate>, UtxoError> {
        let txids: Vec<Txid> = selection
            .selected
            .iter()
            .map(|&i| candidates[i].outpoint.txid)
            .collect();
        let stored = self.store().funding_transactions(&txids).await?;
        let mut candidates = candidates.to_vec();
        for &i in &selection.selected {
            // Several selected outputs of one transaction share it.
            if let Some(funding) = stored.get(&candidates[i].outpoint.txid) {
                candidates[i].funding_transaction = Some(funding.clone());
            }
        }
        Ok(candidates)
    }

    /// Holds the registered outputs `psbt` spends while it is signed (`Store::hold_utxos`), so
    /// the presignature pool does not make presignatures again for an output whose
    /// presignature is being used. The caller marks them spent (`record_signed`); a failed
    /// signing releases them. A hold that cannot be written costs at most a presignature.
    pub(crate) async fn hold_spent_outputs(&self, session: Uuid, psbt: &Psbt) {
        let outpoints: Vec<OutPoint> = psbt
            .unsigned_tx
            .input
            .iter()
            .map(|i| i.previous_output)
            .collect();
        if let Err(e) = self
            .store()
            .hold_utxos(&outpoints, &signing_hold(session), now_ms())
            .await
        {
            warn!(%session, error = %e, "could not hold the registered outputs being spent");
        }
    }

    /// Returns what [`Self::hold_spent_outputs`] held to the spendable outputs.
    pub(crate) async fn release_held_outputs(&self, session: Uuid) {
        if let Err(e) = self.store().release_utxos(&signing_hold(session)).await {
            warn!(%session, error = %e, "could not release the registered outputs held");
        }
    }

    /// Marks registered outputs spent by a transaction signed through `psbt/sign`.
    pub async fn record_signed(&self, report: &SignReport) -> Result<u64, UtxoError> {
        let outpoints: Vec<OutPoint> = report
            .raw_transaction
            .input
            .iter()
            .map(|i| i.previous_output)
            .collect();
        Ok(self
            .store()
            .mark_utxos_spent(&outpoints, report.txid, now_ms())
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use mpc_bitcoin::bitcoin::{
        absolute::LockTime, transaction::Version, Amount, ScriptBuf, Transaction, TxIn, TxOut,
    };
    use serde_json::json;
    use uuid::Uuid;

    use super::ChangeOutput;
    use crate::signing::SignReport;

    /// The typed fields keep the JSON clients already read: amounts in satoshis, paths,
    /// scripts and transactions as strings (hex for scripts and transactions).
    #[test]
    fn reports_keep_their_json_form() {
        let script = ScriptBuf::from_hex("0014ffffffffffffffffffffffffffffffffffffffff").unwrap();
        let change = ChangeOutput {
            vout: 1,
            index: 3,
            path: "m/1/3".parse().unwrap(),
            address: "bcrt1q-not-checked-here".into(),
            script_pubkey: script.clone(),
            amount: Amount::from_sat(25_000),
        };
        assert_eq!(
            serde_json::to_value(&change).unwrap(),
            json!({"vout": 1, "index": 3, "path": "m/1/3", "address": "bcrt1q-not-checked-here",
                   "script_pubkey": "0014ffffffffffffffffffffffffffffffffffffffff",
                   "amount_sats": 25_000})
        );

        let tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn::default()],
            output: vec![TxOut {
                value: Amount::from_sat(25_000),
                script_pubkey: script,
            }],
        };
        let report = SignReport {
            session: Uuid::nil(),
            psbt: String::new(),
            txid: tx.compute_txid(),
            raw_transaction: tx.clone(),
            signers: Vec::new(),
            inputs: Vec::new(),
            attempts: Vec::new(),
            duration_ms: 0.0,
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["txid"], tx.compute_txid().to_string());
        assert_eq!(
            json["raw_transaction"],
            mpc_bitcoin::bitcoin::consensus::encode::serialize_hex(&tx)
        );
    }
}
