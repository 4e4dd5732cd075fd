//! A small client for a node's REST API (used by the CLI and the devnet).

use mpc_types::{NodeId, WalletId};
use std::time::Duration;

use indicatif::ProgressBar;
use mpc_api::{
    incidents::{EvidenceCheck, EvidenceRequest, IncidentList, Released},
    payments::{RegisterUtxosRequest, TransactionRequest, Utxo, UtxoList},
    routes::{
        AddressEntry, Ceremony, CeremonyAccepted, Descriptors, Healthz, KeygenRequest,
        PresignRequest, RepairRequest, ReshareRequest, SignRequest,
    },
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};

/// An API failure: the server's error code and message, or a transport problem.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        details: Value,
        /// Seconds to wait before asking again (a 429's `Retry-After`).
        retry_after: Option<u64>,
    },
    #[error("request to {url} failed: {reason}")]
    Transport { url: String, reason: String },
    #[error("ceremony {id} failed: {error}")]
    Ceremony { id: String, error: String },
}

/// The API's error object (`{"error": {code, message, details}}`) as a [`ClientError`].
fn api_error(status: u16, body: &Value, retry_after: Option<u64>) -> ClientError {
    let err = &body["error"];
    ClientError::Api {
        status,
        code: err["code"].as_str().unwrap_or("unknown").to_string(),
        message: err["message"].as_str().unwrap_or("").to_string(),
        details: err["details"].clone(),
        retry_after,
    }
}

#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    /// `base` like `http://127.0.0.1:8101`.
    pub fn new(base: impl Into<String>, token: Option<String>) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_string(),
            token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()
                .unwrap_or_default(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `req` with the token; a 2xx answer's body as text, anything else as the API's
    /// error.
    async fn fetch(&self, req: reqwest::RequestBuilder, url: &str) -> Result<String, ClientError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let transport = |reason: String| ClientError::Transport {
            url: url.to_string(),
            reason,
        };
        let resp = req.send().await.map_err(|e| transport(e.to_string()))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let text = resp.text().await.map_err(|e| transport(e.to_string()))?;
        if status.is_success() {
            return Ok(text);
        }
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| transport(format!("{status} with a body that is no JSON: {e}")))?;
        Err(api_error(status.as_u16(), &body, retry_after))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T, ClientError> {
        let text = self.fetch(req, url).await?;
        serde_json::from_str(&text).map_err(|e| ClientError::Transport {
            url: url.to_string(),
            reason: format!("unexpected response: {e}"),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A raw `GET` of `path` (for requests the typed methods cannot express, such as the
    /// malformed ones tests send on purpose).
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.url(path);
        self.send(self.http.get(&url), &url).await
    }

    /// A raw `POST` of `body` to `path` (see [`Self::get`]).
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        self.send(self.http.post(&url).json(body), &url).await
    }

    /// Polls a ceremony until it finishes; returns its result. A poll refused by the rate
    /// limit is retried after the `Retry-After` the node gave: the ceremony runs on either way,
    /// and giving up would report a failure for a ceremony that may succeed.
    pub async fn wait_ceremony(
        &self,
        id: &str,
        bar: Option<&ProgressBar>,
    ) -> Result<Value, ClientError> {
        loop {
            let c = match self.ceremony_status(id).await {
                Ok(c) => c,
                Err(ClientError::Api {
                    status: 429,
                    retry_after,
                    ..
                }) => {
                    let wait = Duration::from_secs(retry_after.unwrap_or(1).clamp(1, 60));
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match c.state.as_str() {
                "succeeded" => return Ok(c.result.unwrap_or(Value::Null)),
                "failed" => {
                    return Err(ClientError::Ceremony {
                        id: id.to_string(),
                        error: c.error.unwrap_or_else(|| "unknown".into()),
                    })
                }
                _ => {
                    if let Some(bar) = bar {
                        bar.tick();
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
            }
        }
    }

    /// Starts a ceremony (`POST` returning `ceremony_id`) and waits for it.
    pub async fn ceremony<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        bar: Option<&ProgressBar>,
    ) -> Result<Value, ClientError> {
        let accepted: CeremonyAccepted = self.post(path, body).await?;
        self.wait_ceremony(&accepted.ceremony_id.to_string(), bar)
            .await
    }

    // ---- one method per route: the only place each URL is written ------------------------

    /// `GET /healthz` (no token needed).
    pub async fn healthz(&self) -> Result<Healthz, ClientError> {
        self.get("/healthz").await
    }

    /// `GET /api/v1/openapi.json`.
    pub async fn openapi(&self) -> Result<Value, ClientError> {
        self.get("/api/v1/openapi.json").await
    }

    /// `GET /metrics`: the Prometheus text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let url = self.url("/metrics");
        self.fetch(self.http.get(&url), &url).await
    }

    /// `GET /api/v1/cluster/health` (the peers' records are the node's, not the API's, types).
    pub async fn cluster_health(&self) -> Result<Value, ClientError> {
        self.get("/api/v1/cluster/health").await
    }

    /// `GET /api/v1/cluster/incidents`, newest first, at most `limit`, against `node` if given.
    pub async fn incidents(
        &self,
        node: Option<u16>,
        limit: u32,
    ) -> Result<IncidentList, ClientError> {
        let filter = node.map(|n| format!("&node={n}")).unwrap_or_default();
        self.get(&format!("/api/v1/cluster/incidents?limit={limit}{filter}"))
            .await
    }

    /// `POST /api/v1/cluster/incidents/{node}/release`.
    pub async fn release_incidents(&self, node: u16) -> Result<Released, ClientError> {
        self.post(
            &format!("/api/v1/cluster/incidents/{node}/release"),
            &json!({}),
        )
        .await
    }

    /// `POST /api/v1/cluster/evidence/verify`: evidence any node recorded (hex), checked by
    /// this node against its own cluster CA.
    pub async fn verify_evidence(&self, evidence: &str) -> Result<EvidenceCheck, ClientError> {
        self.post(
            "/api/v1/cluster/evidence/verify",
            &EvidenceRequest {
                evidence: evidence.to_owned(),
            },
        )
        .await
    }

    /// `POST /api/v1/aux-info`: starts the ceremony for `node_set` (`None`: every node).
    pub async fn start_aux_info(
        &self,
        node_set: Option<&[NodeId]>,
    ) -> Result<CeremonyAccepted, ClientError> {
        self.post("/api/v1/aux-info", &json!({ "node_set": node_set }))
            .await
    }

    /// Aux info for a node set (`None`: every node), waited for; the ceremony's result.
    pub async fn aux_info(
        &self,
        node_set: Option<&[NodeId]>,
        bar: Option<&ProgressBar>,
    ) -> Result<Value, ClientError> {
        let accepted = self.start_aux_info(node_set).await?;
        self.wait_ceremony(&accepted.ceremony_id.to_string(), bar)
            .await
    }

    /// `POST /api/v1/keygen`: starts key generation.
    pub async fn start_keygen(
        &self,
        request: &KeygenRequest,
    ) -> Result<CeremonyAccepted, ClientError> {
        self.post("/api/v1/keygen", request).await
    }

    /// A new wallet, waited for; the ceremony's result (wallet id, keys, first address).
    pub async fn keygen(
        &self,
        request: &KeygenRequest,
        bar: Option<&ProgressBar>,
    ) -> Result<Value, ClientError> {
        let accepted = self.start_keygen(request).await?;
        self.wait_ceremony(&accepted.ceremony_id.to_string(), bar)
            .await
    }

    /// `POST /api/v1/wallets/{id}/refresh`, waited for; the ceremony's result (the wallet's
    /// key epoch now).
    pub async fn refresh(
        &self,
        id: &WalletId,
        bar: Option<&ProgressBar>,
    ) -> Result<Value, ClientError> {
        self.start_and_wait(&format!("/api/v1/wallets/{id}/refresh"), &json!({}), bar)
            .await
    }

    /// Starts the ceremony of `path` with `body` and waits for its result.
    async fn start_and_wait<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        bar: Option<&ProgressBar>,
    ) -> Result<Value, ClientError> {
        let accepted: CeremonyAccepted = self.post(path, body).await?;
        self.wait_ceremony(&accepted.ceremony_id.to_string(), bar)
            .await
    }

    /// `POST /api/v1/wallets/{id}/reshare`, waited for; the ceremony's result (the new
    /// committee, threshold, dealers and key epoch).
    pub async fn reshare(
        &self,
        id: &WalletId,
        request: &ReshareRequest,
        bar: Option<&ProgressBar>,
    ) -> Result<Value, ClientError> {
        self.start_and_wait(&format!("/api/v1/wallets/{id}/reshare"), request, bar)
            .await
    }

    /// `POST /api/v1/wallets/{id}/repair`, waited for; the ceremony's result, as for a
    /// resharing.
    pub async fn repair(
        &self,
        id: &WalletId,
        request: &RepairRequest,
        bar: Option<&ProgressBar>,
    ) -> Result<Value, ClientError> {
        self.start_and_wait(&format!("/api/v1/wallets/{id}/repair"), request, bar)
            .await
    }

    /// `GET /api/v1/ceremonies/{id}`.
    pub async fn ceremony_status(&self, id: &str) -> Result<Ceremony, ClientError> {
        self.get(&format!("/api/v1/ceremonies/{id}")).await
    }

    /// `GET /api/v1/wallets` (the node's `WalletInfo` records, as JSON).
    pub async fn wallets(&self) -> Result<Value, ClientError> {
        self.get("/api/v1/wallets").await
    }

    /// `GET /api/v1/wallets/{id}`.
    pub async fn wallet(&self, id: &WalletId) -> Result<Value, ClientError> {
        self.get(&format!("/api/v1/wallets/{id}")).await
    }

    /// `GET /api/v1/wallets/{id}/addresses`: `count` addresses of `chain` (`receive` or
    /// `change`) from index `from`.
    pub async fn addresses(
        &self,
        id: &WalletId,
        chain: &str,
        from: u32,
        count: u32,
    ) -> Result<Vec<AddressEntry>, ClientError> {
        self.get(&format!(
            "/api/v1/wallets/{id}/addresses?chain={chain}&from={from}&count={count}"
        ))
        .await
    }

    /// `GET /api/v1/wallets/{id}/descriptor`.
    pub async fn descriptor(&self, id: &WalletId) -> Result<Descriptors, ClientError> {
        self.get(&format!("/api/v1/wallets/{id}/descriptor")).await
    }

    /// `POST /api/v1/wallets/{id}/utxos`: registers funding outputs, all or none.
    pub async fn register_utxos(
        &self,
        id: &WalletId,
        request: &RegisterUtxosRequest,
    ) -> Result<Vec<Utxo>, ClientError> {
        self.post(&format!("/api/v1/wallets/{id}/utxos"), request)
            .await
    }

    /// `GET /api/v1/wallets/{id}/utxos`.
    pub async fn utxos(&self, id: &WalletId, include_spent: bool) -> Result<UtxoList, ClientError> {
        self.get(&format!(
            "/api/v1/wallets/{id}/utxos?include_spent={include_spent}"
        ))
        .await
    }

    /// `POST /api/v1/wallets/{id}/presignatures`: starts the ceremony.
    pub async fn start_presignatures(
        &self,
        id: &WalletId,
        request: &PresignRequest,
    ) -> Result<CeremonyAccepted, ClientError> {
        self.post(&format!("/api/v1/wallets/{id}/presignatures"), request)
            .await
    }

    /// Presignatures generated now, waited for; the ceremony's result.
    pub async fn presignatures(
        &self,
        id: &WalletId,
        request: &PresignRequest,
        bar: Option<&ProgressBar>,
    ) -> Result<Value, ClientError> {
        let accepted = self.start_presignatures(id, request).await?;
        self.wait_ceremony(&accepted.ceremony_id.to_string(), bar)
            .await
    }

    /// `GET /api/v1/presignatures/stats` (the node's pool records, as JSON).
    pub async fn presignature_stats(&self) -> Result<Value, ClientError> {
        self.get("/api/v1/presignatures/stats").await
    }

    /// `POST /api/v1/wallets/{id}/psbt/sign` (the node's `SignReport`, as JSON).
    pub async fn sign_psbt(
        &self,
        id: &WalletId,
        request: &SignRequest,
    ) -> Result<Value, ClientError> {
        self.post(&format!("/api/v1/wallets/{id}/psbt/sign"), request)
            .await
    }

    /// `POST /api/v1/transactions`: a payment (the node's `SendReport`, as JSON).
    pub async fn send_payment(&self, request: &TransactionRequest) -> Result<Value, ClientError> {
        self.post("/api/v1/transactions", request).await
    }
}
