//! A small client for a node's REST API (used by the CLI and the devnet).

use std::time::Duration;

use indicatif::ProgressBar;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

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

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T, ClientError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let transport = |e: reqwest::Error| ClientError::Transport {
            url: url.to_string(),
            reason: e.to_string(),
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body: Value = resp.json().await.map_err(transport)?;
        if status.is_success() {
            serde_json::from_value(body).map_err(|e| ClientError::Transport {
                url: url.to_string(),
                reason: format!("unexpected response: {e}"),
            })
        } else {
            let err = &body["error"];
            Err(ClientError::Api {
                status: status.as_u16(),
                code: err["code"].as_str().unwrap_or("unknown").to_string(),
                message: err["message"].as_str().unwrap_or("").to_string(),
                details: err["details"].clone(),
                retry_after,
            })
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.url(path);
        self.send(self.http.get(&url), &url).await
    }

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
            let c: Value = match self.get(&format!("/api/v1/ceremonies/{id}")).await {
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
            match c["state"].as_str() {
                Some("succeeded") => return Ok(c["result"].clone()),
                Some("failed") => {
                    return Err(ClientError::Ceremony {
                        id: id.to_string(),
                        error: c["error"].as_str().unwrap_or("unknown").to_string(),
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
        let accepted: Value = self.post(path, body).await?;
        let id = accepted["ceremony_id"]
            .as_str()
            .ok_or_else(|| ClientError::Transport {
                url: self.url(path),
                reason: format!("no ceremony_id in the answer: {accepted}"),
            })?
            .to_string();
        self.wait_ceremony(&id, bar).await
    }
}
