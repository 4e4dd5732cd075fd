//! The QUIC mesh with mutual TLS.
//!
//! One persistent connection per pair of nodes: the node with the lower id dials, the other
//! accepts, and both send over it. Each envelope travels on its own unidirectional stream as
//! one length-prefixed frame (QUIC streams are cheap, and a slow large message does not hold
//! up small ones). A frame is watched until the peer acknowledges it and resent on the next
//! connection if its connection dies first. A peer is who its certificate says: it must chain
//! to the cluster CA, name a configured node, and connect from that node's configured IP; the
//! envelope's sender field must then match, and its signature verify under that certificate
//! (checked before the router sees it). Anything else is refused and logged, and the node
//! keeps serving.
//!
//! A peer gets a bounded share of this node: its connection has at most
//! `max_streams_per_peer` streams open at once (more wait for the earlier ones to be read),
//! receive windows sized to frames, and each frame must arrive within `frame_read_timeout`
//! or its stream is reset. The router bounds what it keeps per peer (held and control
//! messages). So one peer over its share is refused, and the others' frames go on.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use quinn::{Connection, Endpoint, VarInt};
use tokio::{sync::Notify, task::JoinHandle};
use tracing::{debug, info, warn};

use rustls::pki_types::CertificateDer;

use crate::{
    certs::TlsIdentity, node_name, refusal_log::RefusalLog, Envelope, NodeId, NodeKey, Router,
    SessionId, Transport, TransportError,
};

mod frame;
mod tls;

pub use frame::{decode_frame, FrameRefused};
use frame::{read_frame, write_frame};
use tls::{authenticate, crypto_configs, leaf_certificate, tls_err, transport_config};

/// Stream error code sent when a frame is refused.
const REFUSED: VarInt = VarInt::from_u32(1);

/// One other node of the cluster.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub id: NodeId,
    pub address: SocketAddr,
}

/// Everything the mesh needs to start.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    pub me: NodeId,
    pub listen: SocketAddr,
    /// The other nodes (not this one).
    pub peers: Vec<PeerConfig>,
    pub identity: TlsIdentity,
    /// Largest frame accepted (aux-info messages are about 210 KB for n = 5).
    pub max_frame_bytes: usize,
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
    /// How long a send waits for a connection to a peer to come up.
    pub connect_wait: Duration,
    /// Streams (frames in flight) one peer may have open towards this node at once; its
    /// further sends wait until earlier frames were read. Bounds a peer's frames in memory
    /// to this many times `max_frame_bytes`.
    pub max_streams_per_peer: u32,
    /// How long one frame may take to arrive once its stream is open; a stream still
    /// incomplete then (a stalled or trickling sender) is reset.
    pub frame_read_timeout: Duration,
}

impl MeshConfig {
    pub fn new(
        me: NodeId,
        listen: SocketAddr,
        peers: Vec<PeerConfig>,
        identity: TlsIdentity,
    ) -> Self {
        Self {
            me,
            listen,
            peers,
            identity,
            max_frame_bytes: 4 << 20,
            keep_alive: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(3),
            connect_wait: Duration::from_secs(3),
            max_streams_per_peer: 32,
            frame_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Counters of refused traffic, for health and tests.
#[derive(Debug, Default)]
pub struct MeshStats {
    pub connections_refused: AtomicU64,
    pub frames_refused: AtomicU64,
    /// Of `frames_refused`: frames from a peer over one of its quotas (held messages, control
    /// queue) or not complete within the frame deadline.
    pub frames_over_quota: AtomicU64,
    pub frames_received: AtomicU64,
    /// Frames sent again because their connection was lost before the peer acknowledged them.
    pub frames_resent: AtomicU64,
    /// Of `frames_refused`: envelopes whose signature did not verify, per peer they came from.
    bad_signatures: Mutex<HashMap<NodeId, u64>>,
}

impl MeshStats {
    /// Envelopes from `peer` refused because their signature did not verify under its
    /// certificate.
    pub fn bad_signatures_from(&self, peer: NodeId) -> u64 {
        self.bad_signatures
            .lock()
            .map(|b| b.get(&peer).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

struct Inner {
    config: MeshConfig,
    /// Signs every envelope this node sends (its TLS key).
    key: NodeKey,
    /// Each peer's certificate from its latest connection, kept after it closes (for
    /// evidence that outlives the connection).
    peer_certs: Mutex<HashMap<NodeId, CertificateDer<'static>>>,
    endpoint: Endpoint,
    router: Arc<Router>,
    connections: Mutex<HashMap<NodeId, Connection>>,
    changed: Notify,
    stats: MeshStats,
    refusal_log: RefusalLog,
}

/// A running mesh. Dropping it (or [`QuicMesh::shutdown`]) closes every connection.
pub struct QuicMesh {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl QuicMesh {
    /// Binds the endpoint, starts accepting, and starts dialing every higher-id peer.
    pub async fn start(config: MeshConfig, router: Arc<Router>) -> Result<Self, TransportError> {
        let (mut server, mut client) = crypto_configs(&config.identity)?;
        let key = NodeKey::from_pem(&config.identity.key_pem)?;
        let transport = transport_config(&config)?;
        server.transport_config(transport.clone());
        client.transport_config(transport);
        let mut endpoint = Endpoint::server(server, config.listen)?;
        endpoint.set_default_client_config(client);
        let inner = Arc::new(Inner {
            config,
            key,
            peer_certs: Mutex::new(HashMap::new()),
            endpoint,
            router,
            connections: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            stats: MeshStats::default(),
            refusal_log: RefusalLog::new(Duration::from_secs(1)),
        });
        let mut tasks = vec![tokio::spawn(accept_loop(inner.clone()))];
        let me = inner.config.me;
        for peer in inner.config.peers.clone() {
            if peer.id > me {
                tasks.push(tokio::spawn(dial_loop(inner.clone(), peer)));
            }
        }
        info!(node = me.get(), listen = %inner.config.listen, "mesh started");
        Ok(Self {
            inner,
            tasks: Mutex::new(tasks),
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        Ok(self.inner.endpoint.local_addr()?)
    }

    pub fn stats(&self) -> &MeshStats {
        &self.inner.stats
    }

    /// Closes every connection, stops the background tasks and waits until the peers were
    /// told (graceful shutdown).
    pub async fn shutdown(&self) {
        self.close();
        tokio::time::timeout(Duration::from_secs(2), self.inner.endpoint.wait_idle())
            .await
            .ok();
    }

    fn close(&self) {
        self.inner.endpoint.close(VarInt::from_u32(0), b"shutdown");
        if let Ok(mut tasks) = self.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
    }
}

impl QuicMesh {
    /// Sends `bytes` to `to` as one raw frame, without building an envelope: for tests and
    /// diagnostics of the receiving side's checks.
    pub async fn send_raw_frame(&self, to: NodeId, bytes: &[u8]) -> Result<(), TransportError> {
        let conn = wait_for_connection(&self.inner, to).await?;
        write_frame(&conn, bytes)
            .await
            .map_err(|e| TransportError::Unreachable(to, e))?;
        Ok(())
    }

    /// Opens a stream to `to` and writes `bytes` on it without finishing it, as a peer that
    /// stalls mid-frame does (for tests of the receiver's quotas). Dropping the returned
    /// stream finishes it.
    pub async fn open_raw_stream(
        &self,
        to: NodeId,
        bytes: &[u8],
    ) -> Result<quinn::SendStream, TransportError> {
        let conn = wait_for_connection(&self.inner, to).await?;
        let unreachable =
            |e: &dyn std::fmt::Display| TransportError::Unreachable(to, e.to_string());
        let mut stream = conn.open_uni().await.map_err(|e| unreachable(&e))?;
        stream.write_all(bytes).await.map_err(|e| unreachable(&e))?;
        Ok(stream)
    }

    /// Closes the connection to `to` at once, losing whatever it had not yet delivered, as
    /// when it dies (for tests of delivery across a lost connection). The dialer reconnects.
    pub fn drop_connection(&self, to: NodeId) {
        let conn = self
            .inner
            .connections
            .lock()
            .ok()
            .and_then(|c| c.get(&to).cloned());
        if let Some(conn) = conn {
            conn.close(VarInt::from_u32(0), b"dropped");
        }
    }
}

impl Drop for QuicMesh {
    fn drop(&mut self) {
        self.close();
    }
}

impl Transport for QuicMesh {
    fn local_id(&self) -> NodeId {
        self.inner.config.me
    }

    fn send(&self, to: NodeId, envelope: Envelope) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            let inner = &self.inner;
            if !inner.config.peers.iter().any(|p| p.id == to) {
                return Err(TransportError::UnknownPeer(to));
            }
            let bytes = envelope.signed(&inner.key)?.encode();
            if bytes.len() > inner.config.max_frame_bytes {
                return Err(TransportError::FrameTooLarge {
                    size: bytes.len(),
                    limit: inner.config.max_frame_bytes,
                });
            }
            let mut frame = Vec::with_capacity(4 + bytes.len());
            frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            frame.extend_from_slice(&bytes);
            let conn = wait_for_connection(inner, to).await?;
            let stream = write_frame(&conn, &frame)
                .await
                .map_err(|e| TransportError::Unreachable(to, e))?;
            // A written frame is only delivered once the peer acknowledges it, after this
            // returns; a connection that dies first (the peer restarted, or this process
            // stalled past the idle timeout) would lose it silently. The watcher resends it on
            // the next connection; receivers drop the copy if the first one did arrive.
            tokio::spawn(confirm_delivery(inner.clone(), to, stream, frame));
            Ok(())
        })
    }

    fn peer_certificate(&self, peer: NodeId) -> Option<CertificateDer<'static>> {
        self.inner
            .peer_certs
            .lock()
            .ok()
            .and_then(|c| c.get(&peer).cloned())
    }

    fn connected_peers(&self) -> Vec<NodeId> {
        let conns = self
            .inner
            .connections
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        let mut ids: Vec<NodeId> = conns
            .iter()
            .filter(|(_, c)| c.close_reason().is_none())
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }
}

/// Resends of one frame after its connection was lost unacknowledged, before giving up.
const MAX_RESENDS: u32 = 3;

/// Waits for the peer's acknowledgement of `frame` and resends it while its connection is
/// lost first (at most [`MAX_RESENDS`] times, each waiting for a new connection).
async fn confirm_delivery(
    inner: Arc<Inner>,
    to: NodeId,
    mut stream: quinn::SendStream,
    frame: Vec<u8>,
) {
    let me = inner.config.me;
    for resend in 1.. {
        // Ok: acknowledged, or refused by the peer (a resend would be refused the same way).
        let Err(e) = stream.stopped().await else {
            return;
        };
        if resend > MAX_RESENDS {
            warn!(
                node = me.get(),
                peer = to.get(),
                "frame lost: {MAX_RESENDS} connections died before the peer acknowledged it"
            );
            return;
        }
        info!(node = me.get(), peer = to.get(), error = %e, resend, "frame lost with its connection; resending");
        let written = match wait_for_connection(&inner, to).await {
            Ok(conn) => write_frame(&conn, &frame).await,
            Err(e) => Err(e.to_string()),
        };
        match written {
            Ok(s) => {
                inner.stats.frames_resent.fetch_add(1, Ordering::Relaxed);
                stream = s;
            }
            Err(e) => {
                warn!(node = me.get(), peer = to.get(), error = %e, "frame lost: its connection died and no new one came up");
                return;
            }
        }
    }
}

async fn wait_for_connection(inner: &Inner, to: NodeId) -> Result<Connection, TransportError> {
    let deadline = tokio::time::Instant::now() + inner.config.connect_wait;
    loop {
        let notified = inner.changed.notified();
        if let Some(conn) = inner
            .connections
            .lock()
            .ok()
            .and_then(|c| c.get(&to).cloned())
            .filter(|c| c.close_reason().is_none())
        {
            return Ok(conn);
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(TransportError::Unreachable(to, "no connection".into()));
        }
    }
}

fn register(inner: &Arc<Inner>, peer: NodeId, conn: Connection, cert: CertificateDer<'static>) {
    if let Ok(mut certs) = inner.peer_certs.lock() {
        certs.insert(peer, cert);
    }
    let replaced = inner
        .connections
        .lock()
        .ok()
        .and_then(|mut conns| conns.insert(peer, conn));
    // One connection per peer: an older one is closed so its owner redials, rather than
    // staying open but unused.
    if let Some(old) = replaced {
        old.close(VarInt::from_u32(0), b"replaced by a newer connection");
    }
    inner.changed.notify_waiters();
}

fn unregister(inner: &Arc<Inner>, peer: NodeId, conn: &Connection) {
    if let Ok(mut conns) = inner.connections.lock() {
        if conns.get(&peer).map(Connection::stable_id) == Some(conn.stable_id()) {
            conns.remove(&peer);
        }
    }
    inner.changed.notify_waiters();
}

async fn dial_loop(inner: Arc<Inner>, peer: PeerConfig) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let attempt = async {
            inner
                .endpoint
                .connect(peer.address, &node_name(peer.id))
                .map_err(tls_err)?
                .await
                .map_err(tls_err)
        };
        match attempt.await {
            Ok(conn) => {
                let connected_at = tokio::time::Instant::now();
                debug!(
                    node = inner.config.me.get(),
                    peer = peer.id.get(),
                    "connected"
                );
                match leaf_certificate(&conn) {
                    Ok(cert) => {
                        register(&inner, peer.id, conn.clone(), cert.clone());
                        read_loop(&inner, peer.id, &cert, &conn).await;
                        unregister(&inner, peer.id, &conn);
                    }
                    // rustls verified a certificate, so this does not happen; never serve a
                    // connection whose messages could not be checked.
                    Err(reason) => {
                        warn!(node = inner.config.me.get(), peer = peer.id.get(), %reason, "peer refused");
                        conn.close(REFUSED, reason.as_bytes());
                    }
                }
                debug!(
                    node = inner.config.me.get(),
                    peer = peer.id.get(),
                    "connection closed"
                );
                // A connection the peer closes at once (e.g. it refuses our certificate after
                // the TLS 1.3 handshake) counts as a failed attempt: keep backing off.
                if connected_at.elapsed() > Duration::from_secs(2) {
                    backoff = Duration::from_millis(50);
                } else {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
            Err(e) => {
                debug!(node = inner.config.me.get(), peer = peer.id.get(), error = %e, "dial failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn accept_loop(inner: Arc<Inner>) {
    while let Some(incoming) = inner.endpoint.accept().await {
        let inner = inner.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(e) => {
                    inner
                        .stats
                        .connections_refused
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(node = inner.config.me.get(), %remote, error = %e, "TLS handshake refused");
                    return;
                }
            };
            match authenticate(&inner.config, &conn) {
                Ok((peer, cert)) => {
                    debug!(node = inner.config.me.get(), peer = peer.get(), "accepted");
                    register(&inner, peer, conn.clone(), cert.clone());
                    read_loop(&inner, peer, &cert, &conn).await;
                    unregister(&inner, peer, &conn);
                }
                Err(reason) => {
                    inner
                        .stats
                        .connections_refused
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(node = inner.config.me.get(), %remote, %reason, "peer refused");
                    conn.close(REFUSED, reason.as_bytes());
                }
            }
        });
    }
}

async fn read_loop(
    inner: &Arc<Inner>,
    peer: NodeId,
    cert: &CertificateDer<'static>,
    conn: &Connection,
) {
    // The connection admits at most `max_streams_per_peer` streams at once, so at most that
    // many of these tasks run per peer.
    while let Ok(stream) = conn.accept_uni().await {
        let inner = inner.clone();
        let cert = cert.clone();
        tokio::spawn(async move { receive_frame(&inner, peer, &cert, stream).await });
    }
}

/// Reads one frame from `peer` (whose certificate is `cert`), checks its signature, and
/// hands its envelope to the router.
async fn receive_frame(
    inner: &Inner,
    peer: NodeId,
    cert: &CertificateDer<'static>,
    mut stream: quinn::RecvStream,
) {
    let envelope = match read_frame(&inner.config, &mut stream).await {
        Ok(envelope) => envelope,
        Err(refused) => return inner.refused(peer, None, &refused),
    };
    let session = envelope.session;
    // Before the router holds, de-duplicates or compares it: a message the peer did not sign
    // must not count as its equivocation, nor take its place in the hold area.
    if envelope.verify(cert).is_err() {
        if let Ok(mut bad) = inner.stats.bad_signatures.lock() {
            *bad.entry(peer).or_default() += 1;
        }
        return inner.refused(peer, Some(session), &FrameRefused::BadSignature(peer));
    }
    match inner.router.deliver(peer, envelope) {
        Ok(_) => {
            inner.stats.frames_received.fetch_add(1, Ordering::Relaxed);
        }
        Err(refusal) => inner.refused(peer, Some(session), &FrameRefused::Router(refusal)),
    }
}

impl Inner {
    /// Counts a refused frame of `peer`'s and logs it: at most one line a second per peer and
    /// kind of refusal, so a flood cannot flood the log nor hide another kind.
    fn refused(&self, peer: NodeId, session: Option<SessionId>, refused: &FrameRefused) {
        self.stats.frames_refused.fetch_add(1, Ordering::Relaxed);
        if refused.is_over_quota() {
            self.stats.frames_over_quota.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(unlogged) = self
            .refusal_log
            .admit((peer, refused.kind()), Instant::now())
        {
            warn!(
                node = self.config.me.get(),
                peer = peer.get(),
                session = session.map(tracing::field::display),
                reason = %refused,
                unlogged,
                "frame refused"
            );
        }
    }
}
