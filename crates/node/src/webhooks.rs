//! Webhooks: POSTs to the URLs an operator configures (`[[webhooks]]`) when something a custody
//! team watches happens: a request waits for approvals (`pending`), a transaction was signed
//! (`signed`), a signing was refused (`refused`), blame or a peer's rewritten audit log
//! (`incident`).
//!
//! Events come from the audit log: one is sent only after its entry was appended, and the body
//! is that entry (seq, hash, actor, kind, details), which by construction holds no secret. Each
//! POST carries `X-Mpc-Timestamp` (Unix seconds) and `X-Mpc-Signature: sha256=HEX`, the
//! HMAC-SHA256 under the webhook's secret of `TIMESTAMP.BODY`, so a receiver can check that
//! this node sent it and refuse stale replays. A delivery that fails (network error, timeout,
//! any status but 2xx) is retried with exponential backoff up to `max_attempts`. Deliveries
//! wait in memory, in order, per webhook: those pending when the node stops are lost, and a
//! full queue drops new events (logged). The audit log is the durable record; receivers
//! reconcile against it by seq (`mpc-wallet audit export`).

use std::{path::PathBuf, time::Duration};

use hmac::{Hmac, Mac};
use mpc_store::{Actor, AuditEvent, AuditHash, AuditHead};
use mpc_transport::NodeId;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::mpsc;
use tracing::{error, info, warn};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::{now_ms, NodeError};

/// Events waiting per webhook before new ones are dropped.
const QUEUE: usize = 1024;
/// The first retry's wait; each next one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Shortest secret accepted: an HMAC key guessable by brute force protects nothing.
const MIN_SECRET_BYTES: usize = 16;

/// What a webhook is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEvent {
    /// A signing or payment request waits for approvals.
    Pending,
    /// This node, as coordinator, returned a signed transaction.
    Signed,
    /// A signing this node coordinated was refused or failed, or this node refused as a signer.
    Refused,
    /// Blame recorded against a node, or a peer's audit log changed.
    Incident,
}

impl WebhookEvent {
    pub const ALL: [WebhookEvent; 4] = [
        WebhookEvent::Pending,
        WebhookEvent::Signed,
        WebhookEvent::Refused,
        WebhookEvent::Incident,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::Pending => "pending",
            WebhookEvent::Signed => "signed",
            WebhookEvent::Refused => "refused",
            WebhookEvent::Incident => "incident",
        }
    }

    /// The webhook event an audit entry is, if any.
    pub fn of(event: &AuditEvent) -> Option<WebhookEvent> {
        match event {
            AuditEvent::ApprovalPending { .. } => Some(WebhookEvent::Pending),
            AuditEvent::SigningFinished { ok: true, .. } => Some(WebhookEvent::Signed),
            AuditEvent::SigningFinished { ok: false, .. } | AuditEvent::SignerRefused { .. } => {
                Some(WebhookEvent::Refused)
            }
            AuditEvent::Incident { .. } | AuditEvent::PeerAuditLogChanged { .. } => {
                Some(WebhookEvent::Incident)
            }
            _ => None,
        }
    }
}

/// One webhook (`[[webhooks]]` in the node config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `https://…` (or `http://` on a trusted network).
    pub url: String,
    /// A file holding the HMAC key (at least 16 bytes; surrounding whitespace is ignored). The
    /// config names the file, never the secret, so the config can be shown and digested.
    pub secret_file: PathBuf,
    /// The events sent; all of them if absent.
    #[serde(default = "all_events")]
    pub events: Vec<WebhookEvent>,
    /// Deliveries tried per event before it is given up (logged at error).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Time allowed per delivery attempt.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn all_events() -> Vec<WebhookEvent> {
    WebhookEvent::ALL.to_vec()
}

fn default_attempts() -> u32 {
    8
}

fn default_timeout_ms() -> u64 {
    5_000
}

impl WebhookConfig {
    /// Checks what can be checked without the network or the secret file.
    pub fn validate(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.url).map_err(|e| format!("{:?}: {e}", self.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{:?}: only http and https URLs", self.url));
        }
        if self.max_attempts == 0 || self.timeout_ms == 0 {
            return Err(format!(
                "{:?}: max_attempts and timeout_ms must be at least 1",
                self.url
            ));
        }
        Ok(())
    }
}

/// The body of a delivery.
#[derive(Serialize)]
struct Payload<'a> {
    event: WebhookEvent,
    /// Unique per event and webhook; the same across its retries (receivers deduplicate on it).
    delivery: Uuid,
    node: NodeId,
    seq: u64,
    hash: &'a AuditHash,
    at_ms: i64,
    actor: &'a Actor,
    #[serde(flatten)]
    entry: &'a AuditEvent,
}

/// A delivery waiting: its body, built once so every retry sends the same bytes.
struct Delivery {
    id: Uuid,
    event: WebhookEvent,
    body: String,
}

struct Target {
    events: Vec<WebhookEvent>,
    queue: mpsc::Sender<Delivery>,
}

/// The node's webhooks: a queue and a sending task per configured URL.
#[derive(Default)]
pub struct Webhooks {
    targets: Vec<Target>,
}

/// A webhook's sending side, moved into its task.
struct Sender {
    url: String,
    secret: Zeroizing<Vec<u8>>,
    max_attempts: u32,
    timeout: Duration,
    client: reqwest::Client,
}

impl Webhooks {
    /// Reads each webhook's secret and starts its sending task. Needs a Tokio runtime.
    pub fn start(configs: &[WebhookConfig], node: NodeId) -> Result<Webhooks, NodeError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("mpc-wallet/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NodeError::Config(format!("webhook client: {e}")))?;
        let mut targets = Vec::new();
        for config in configs {
            config.validate().map_err(NodeError::Config)?;
            let secret = read_secret(&config.secret_file)?;
            let (queue, waiting) = mpsc::channel(QUEUE);
            let sender = Sender {
                url: config.url.clone(),
                secret,
                max_attempts: config.max_attempts,
                timeout: Duration::from_millis(config.timeout_ms),
                client: client.clone(),
            };
            tokio::spawn(sender.run(node, waiting));
            targets.push(Target {
                events: config.events.clone(),
                queue,
            });
        }
        Ok(Webhooks { targets })
    }

    /// Queues `entry` (just appended at `head` by `actor`) for every webhook that wants it.
    pub fn notify(&self, node: NodeId, head: &AuditHead, actor: &Actor, entry: &AuditEvent) {
        let Some(event) = WebhookEvent::of(entry) else {
            return;
        };
        for target in self.targets.iter().filter(|t| t.events.contains(&event)) {
            let id = Uuid::new_v4();
            let payload = Payload {
                event,
                delivery: id,
                node,
                seq: head.seq,
                hash: &head.hash,
                at_ms: now_ms(),
                actor,
                entry,
            };
            let body = match serde_json::to_string(&payload) {
                Ok(body) => body,
                Err(e) => {
                    error!(seq = head.seq, error = %e, "webhook body not encoded");
                    continue;
                }
            };
            if let Err(e) = target.queue.try_send(Delivery { id, event, body }) {
                warn!(seq = head.seq, error = %e, "webhook queue full or closed: event dropped (the audit log has it)");
            }
        }
    }
}

fn read_secret(path: &PathBuf) -> Result<Zeroizing<Vec<u8>>, NodeError> {
    let raw = Zeroizing::new(
        std::fs::read(path)
            .map_err(|e| NodeError::Config(format!("webhook secret {}: {e}", path.display())))?,
    );
    let secret = Zeroizing::new(raw.trim_ascii().to_vec());
    if secret.len() < MIN_SECRET_BYTES {
        return Err(NodeError::Config(format!(
            "webhook secret {}: at least {MIN_SECRET_BYTES} bytes",
            path.display()
        )));
    }
    Ok(secret)
}

/// `sha256=HEX`: HMAC-SHA256 under `secret` of `TIMESTAMP.BODY` (`None` only for a key HMAC
/// refuses, which for SHA-256 is none).
pub fn signature(secret: &[u8], timestamp: u64, body: &str) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    Some(format!(
        "sha256={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

impl Sender {
    async fn run(self, node: NodeId, mut waiting: mpsc::Receiver<Delivery>) {
        while let Some(delivery) = waiting.recv().await {
            self.deliver(node, &delivery).await;
        }
    }

    async fn deliver(&self, node: NodeId, delivery: &Delivery) {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=self.max_attempts {
            let timestamp = u64::try_from(now_ms() / 1000).unwrap_or(0);
            let Some(signed) = signature(&self.secret, timestamp, &delivery.body) else {
                error!(url = %self.url, "webhook secret refused by HMAC: not sent");
                return;
            };
            let sent = self
                .client
                .post(&self.url)
                .timeout(self.timeout)
                .header("content-type", "application/json")
                .header("x-mpc-event", delivery.event.as_str())
                .header("x-mpc-delivery", delivery.id.to_string())
                .header("x-mpc-node", node.to_string())
                .header("x-mpc-timestamp", timestamp.to_string())
                .header("x-mpc-signature", signed)
                .body(delivery.body.clone())
                .send()
                .await;
            let problem = match sent {
                Ok(response) if response.status().is_success() => {
                    info!(url = %self.url, delivery = %delivery.id, attempt, "webhook delivered");
                    return;
                }
                Ok(response) => format!("status {}", response.status()),
                Err(e) => e.to_string(),
            };
            if attempt == self.max_attempts {
                error!(url = %self.url, delivery = %delivery.id, attempts = attempt, problem, "webhook given up");
                return;
            }
            warn!(url = %self.url, delivery = %delivery.id, attempt, problem, retry_in_ms = backoff.as_millis() as u64, "webhook not delivered");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature a receiver recomputes: checked against Python's `hmac` module
    /// (`hmac.new(key, b'1700000000.{"a":1}', hashlib.sha256).hexdigest()`).
    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        assert_eq!(
            signature(b"0123456789abcdef", 1_700_000_000, r#"{"a":1}"#).as_deref(),
            Some("sha256=9eb18f493f8ec135d9eb2dad817c369bb4e9cbfa818657897a7437c1cd8c3a23")
        );
    }

    #[test]
    fn bad_webhooks_are_refused_before_the_node_starts() {
        let config = |url: &str| WebhookConfig {
            url: url.into(),
            secret_file: PathBuf::from("/nonexistent"),
            events: all_events(),
            max_attempts: 3,
            timeout_ms: 1_000,
        };
        assert!(config("https://hooks.example/x").validate().is_ok());
        assert!(config("ftp://hooks.example/x").validate().is_err());
        assert!(config("not a url").validate().is_err());
        let mut none = config("https://hooks.example/x");
        none.max_attempts = 0;
        assert!(none.validate().is_err());

        let dir = std::env::temp_dir().join(format!("mpc-webhook-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, "too short\n").unwrap();
        assert!(read_secret(&short).is_err());
        let good = dir.join("good");
        std::fs::write(&good, "  0123456789abcdef\n").unwrap();
        assert_eq!(read_secret(&good).unwrap().as_slice(), b"0123456789abcdef");
        assert!(read_secret(&dir.join("missing")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
