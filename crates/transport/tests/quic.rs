//! The QUIC mesh on loopback with real TLS: who gets in, what gets through, and that the
//! node keeps serving after every refusal.

use std::{
    net::SocketAddr,
    sync::atomic::Ordering,
    sync::Arc,
    time::{Duration, Instant},
};

use mpc_transport::{
    certs::{ClusterCa, TlsIdentity},
    quic::{MeshConfig, PeerConfig, QuicMesh},
    ControlInbox, Envelope, NodeId, NodeKey, Router, RouterLimits, SessionEvent, SessionId,
    SessionInbox, Transport, CONTROL,
};
use time::OffsetDateTime;

const N1: NodeId = NodeId::must(1);
const N2: NodeId = NodeId::must(2);
const N3: NodeId = NodeId::must(3);

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Cluster {
    ca: ClusterCa,
    addrs: Vec<SocketAddr>,
}

impl Cluster {
    fn new(n: usize) -> Self {
        Self {
            ca: ClusterCa::generate("test", 30).unwrap(),
            addrs: (0..n)
                .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
                .collect(),
        }
    }

    fn identity(
        &self,
        ca: &ClusterCa,
        id: NodeId,
        not_before: OffsetDateTime,
        days: i64,
    ) -> TlsIdentity {
        let cert = ca
            .issue_node(id, &["127.0.0.1".parse().unwrap()], not_before, days)
            .unwrap();
        TlsIdentity {
            ca_pem: self.ca.cert_pem().to_string(),
            cert_pem: cert.cert_pem,
            key_pem: cert.key_pem,
        }
    }

    fn config(&self, me: NodeId, identity: TlsIdentity) -> MeshConfig {
        let peers = (1..=self.addrs.len() as u16)
            .filter_map(NodeId::new)
            .filter(|id| *id != me)
            .map(|id| PeerConfig {
                id,
                address: self.addrs[usize::from(id.get() - 1)],
            })
            .collect();
        let mut c = MeshConfig::new(me, self.addrs[usize::from(me.get() - 1)], peers, identity);
        c.max_frame_bytes = 1 << 20;
        c
    }

    /// Node `me`'s config with a valid certificate.
    fn node_config(&self, me: NodeId) -> MeshConfig {
        let identity = self.identity(
            &self.ca,
            me,
            OffsetDateTime::now_utc() - time::Duration::hours(1),
            1,
        );
        self.config(me, identity)
    }

    async fn start(&self, me: NodeId) -> (QuicMesh, Arc<Router>) {
        self.start_with(self.node_config(me)).await
    }

    async fn start_with(&self, config: MeshConfig) -> (QuicMesh, Arc<Router>) {
        let (mesh, router, control) = self.start_with_control(config).await;
        // Control messages are not used here; keep the channel open for the test's life.
        std::mem::forget(control);
        (mesh, router)
    }

    async fn start_with_control(
        &self,
        config: MeshConfig,
    ) -> (QuicMesh, Arc<Router>, ControlInbox) {
        let (router, control) = Router::new(config.me, RouterLimits::default());
        // A just-stopped node's port may take a moment to be released.
        for _ in 0..50 {
            match QuicMesh::start(config.clone(), router.clone()).await {
                Ok(mesh) => return (mesh, router, control),
                Err(mpc_transport::TransportError::Io(e))
                    if e.kind() == std::io::ErrorKind::AddrInUse =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("port {} stayed in use", config.listen)
    }

    /// A rogue that dials `target` as if it were node `me`, from another (free) port.
    fn rogue_config(&self, me: NodeId, target: NodeId, identity: TlsIdentity) -> MeshConfig {
        let mut c = self.config(me, identity);
        c.listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        c.peers.retain(|p| p.id == target);
        c.connect_wait = Duration::from_secs(2);
        c
    }
}

fn envelope(session: u8, from: NodeId, to: Option<NodeId>, payload: &[u8]) -> Envelope {
    Envelope {
        protocol: 1,
        session: SessionId([session; 16]),
        round: 1,
        from,
        to,
        payload: payload.to_vec(),
        signature: None,
    }
}

async fn expect_message(inbox: &mut SessionInbox, payload: &[u8]) {
    match tokio::time::timeout(Duration::from_secs(5), inbox.recv()).await {
        Ok(Some(SessionEvent::Message(e))) => assert_eq!(e.payload, payload),
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn expect_nothing(inbox: &mut SessionInbox) {
    assert!(
        tokio::time::timeout(Duration::from_millis(500), inbox.recv())
            .await
            .is_err(),
        "a refused message was delivered"
    );
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Node 1 and node 3 exchange a message both ways in a fresh session: the mesh still serves.
async fn still_serving(n1: &QuicMesh, r1: &Arc<Router>, n3: &QuicMesh, r3: &Arc<Router>, tag: u8) {
    let mut in3 = r3.register(SessionId([tag; 16]), &[N1, N3]).unwrap();
    let mut in1 = r1.register(SessionId([tag; 16]), &[N1, N3]).unwrap();
    n1.send(N3, envelope(tag, N1, Some(N3), b"ping"))
        .await
        .unwrap();
    n3.send(N1, envelope(tag, N3, None, b"pong")).await.unwrap();
    expect_message(&mut in3, b"ping").await;
    expect_message(&mut in1, b"pong").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_connect_and_route_both_ways() {
    let c = Cluster::new(3);
    let (n1, r1) = c.start(N1).await;
    let (n2, r2) = c.start(N2).await;
    let (n3, r3) = c.start(N3).await;
    wait_until("full mesh", || {
        n1.connected_peers() == [N2, N3]
            && n2.connected_peers() == [N1, N3]
            && n3.connected_peers() == [N1, N2]
    })
    .await;
    let mut inboxes: Vec<_> = [&r1, &r2, &r3]
        .iter()
        .map(|r| r.register(SessionId([1; 16]), &[N1, N2, N3]).unwrap())
        .collect();
    // Every node to every other, over the one connection per pair.
    for (sender, mesh) in [(N1, &n1), (N2, &n2), (N3, &n3)] {
        for to in (1..=3u16).filter_map(NodeId::new).filter(|t| *t != sender) {
            mesh.send(
                to,
                envelope(1, sender, Some(to), &[sender.get() as u8, to.get() as u8]),
            )
            .await
            .unwrap();
        }
    }
    for (i, inbox) in inboxes.iter_mut().enumerate() {
        let me = i as u16 + 1;
        let mut got = Vec::new();
        for _ in 0..2 {
            match tokio::time::timeout(Duration::from_secs(5), inbox.recv()).await {
                Ok(Some(SessionEvent::Message(e))) => got.push((e.from, e.payload)),
                other => panic!("{other:?}"),
            }
        }
        got.sort();
        let expected: Vec<_> = (1..=3u16)
            .filter(|s| *s != me)
            .map(|s| (NodeId::must(s), vec![s as u8, me as u8]))
            .collect();
        assert_eq!(got, expected);
    }
    // A message sent before the receiver registered its session is held, then delivered.
    n1.send(N2, envelope(2, N1, None, b"early")).await.unwrap();
    wait_until("held message", || r2.held_count() == 1).await;
    let mut late = r2.register(SessionId([2; 16]), &[N1, N2]).unwrap();
    expect_message(&mut late, b"early").await;
    // A replay of a finished session's message is refused.
    drop(late);
    n1.send(N2, envelope(2, N1, None, b"replay")).await.unwrap();
    wait_until("replay refused", || {
        n2.stats().frames_refused.load(Ordering::Relaxed) == 1
    })
    .await;
    // A frame over the sender's limit never leaves.
    let big = envelope(1, N1, Some(N3), &vec![0u8; 2 << 20]);
    assert!(n1.send(N3, big).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_impostors_expired_certificates_and_bad_frames_are_refused() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("warn")
        .try_init();
    let c = Cluster::new(3);
    let (n1, r1) = c.start(N1).await;
    let (n3, r3) = c.start(N3).await;
    wait_until("1-3 connected", || n1.connected_peers() == [N3]).await;
    still_serving(&n1, &r1, &n3, &r3, 10).await;
    let refused = || n3.stats().connections_refused.load(Ordering::Relaxed);

    // 1. A certificate from another CA, naming node 2: the TLS handshake fails.
    let other_ca = ClusterCa::generate("other", 30).unwrap();
    let foreign = c.identity(
        &other_ca,
        N2,
        OffsetDateTime::now_utc() - time::Duration::hours(1),
        1,
    );
    let (rogue, _) = c.start_with(c.rogue_config(N2, N3, foreign)).await;
    let mut in3 = r3.register(SessionId([20; 16]), &[N1, N2, N3]).unwrap();
    // TLS 1.3 lets the client write before the server has checked its certificate, so the
    // send may "succeed"; what matters is that nothing is delivered.
    let _ = rogue.send(N3, envelope(20, N2, None, b"x")).await;
    wait_until("foreign CA refused", || refused() >= 1).await;
    expect_nothing(&mut in3).await;
    drop(rogue);
    still_serving(&n1, &r1, &n3, &r3, 11).await;

    // 2. An expired certificate from the right CA.
    let expired = c.identity(
        &c.ca,
        N2,
        OffsetDateTime::now_utc() - time::Duration::days(10),
        1,
    );
    let before = refused();
    let (rogue, _) = c.start_with(c.rogue_config(N2, N3, expired)).await;
    let mut in3 = r3.register(SessionId([21; 16]), &[N1, N2, N3]).unwrap();
    let _ = rogue.send(N3, envelope(21, N2, None, b"x")).await;
    wait_until("expired certificate refused", || refused() > before).await;
    expect_nothing(&mut in3).await;
    drop(rogue);
    still_serving(&n1, &r1, &n3, &r3, 12).await;

    // 3. Node 2's valid certificate, but envelopes claiming to come from node 1 (signed with
    //    node 2's own key, the only one it has: it cannot make one that verifies as node 1's).
    let mut in3 = r3.register(SessionId([30; 16]), &[N1, N2, N3]).unwrap();
    let node2 = c.identity(
        &c.ca,
        N2,
        OffsetDateTime::now_utc() - time::Duration::hours(1),
        1,
    );
    let (rogue, _) = c.start_with(c.rogue_config(N2, N3, node2.clone())).await;
    let frames_refused = || n3.stats().frames_refused.load(Ordering::Relaxed);
    let before = frames_refused();
    rogue
        .send(N3, envelope(30, N1, None, b"forged"))
        .await
        .unwrap();
    wait_until("impersonation refused", || frames_refused() > before).await;
    expect_nothing(&mut in3).await;

    // 4. Garbage bytes and a frame whose prefix lies.
    let before = frames_refused();
    rogue
        .send_raw_frame(N3, b"\x00\x00\x00\x05garbage that is no envelope")
        .await
        .unwrap();
    rogue.send_raw_frame(N3, &[0xff; 64]).await.unwrap();
    let mut lying = (10u32).to_be_bytes().to_vec();
    lying.extend(envelope(30, N2, None, b"y").encode());
    rogue.send_raw_frame(N3, &lying).await.unwrap();
    wait_until("garbage refused", || frames_refused() >= before + 3).await;

    // 5. An oversize frame (the rogue's own limit is higher than node 3's).
    let before = frames_refused();
    let mut big = c.rogue_config(N2, N3, node2.clone());
    big.max_frame_bytes = 8 << 20;
    drop(rogue);
    let (rogue, _) = c.start_with(big).await;
    let _ = rogue
        .send(N3, envelope(30, N2, None, &vec![7u8; 2 << 20]))
        .await;
    wait_until("oversize refused", || frames_refused() > before).await;
    expect_nothing(&mut in3).await;

    // 6. A message for a session node 3 does not run, from a valid peer: held, never
    //    delivered to another session; and the genuine node-2 identity still works.
    rogue
        .send(N3, envelope(30, N2, None, b"genuine"))
        .await
        .unwrap();
    expect_message(&mut in3, b"genuine").await;
    drop(rogue);

    // 7. A node dialing "upwards" is refused: node 3 may not dial node 2 (the lower id dials).
    // Node 2 accepts here; the dialer's config says it is node 1, so that it dials node 2.
    let (n2, _r2) = c.start(N2).await;
    let wrong_direction = c.identity(
        &c.ca,
        N3,
        OffsetDateTime::now_utc() - time::Duration::hours(1),
        1,
    );
    let before = n2.stats().connections_refused.load(Ordering::Relaxed);
    let mut cfg = c.config(N1, wrong_direction);
    cfg.listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    cfg.peers.retain(|p| p.id == N2);
    let (rogue, _) = c.start_with(cfg).await;
    wait_until("upward dial refused", || {
        n2.stats().connections_refused.load(Ordering::Relaxed) > before
    })
    .await;
    drop(rogue);
    drop(n2);

    still_serving(&n1, &r1, &n3, &r3, 13).await;
}

/// Issue 18 (a) over QUIC: node 2 signs an envelope, then one bit is flipped in its header,
/// its payload or its signature. Node 3 refuses each before the router sees it, counts it
/// against node 2, delivers nothing, and still takes node 2's genuine message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_with_one_flipped_bit_is_refused_and_blamed_on_its_sender() {
    let c = Cluster::new(3);
    let identity2 = c.identity(
        &c.ca,
        N2,
        OffsetDateTime::now_utc() - time::Duration::hours(1),
        1,
    );
    let key2 = NodeKey::from_pem(&identity2.key_pem).unwrap();
    let (n2, _r2) = c.start_with(c.config(N2, identity2)).await;
    let (n3, r3) = c.start(N3).await;
    wait_until("2-3 connected", || n2.connected_peers() == [N3]).await;
    let mut in3 = r3.register(SessionId([40; 16]), &[N1, N2, N3]).unwrap();
    let signed = envelope(40, N2, Some(N3), b"payload of node 2")
        .signed(&key2)
        .unwrap()
        .encode();
    let frame = |bytes: &[u8]| {
        let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    };
    // Round (header), sender (header: now node 3, not who signed), payload, signature.
    let positions = [19, 21, 30, signed.len() - 1];
    for (k, at) in positions.into_iter().enumerate() {
        let mut flipped = signed.clone();
        flipped[at] ^= 0x01;
        n2.send_raw_frame(N3, &frame(&flipped)).await.unwrap();
        wait_until("flipped bit refused", || {
            n3.stats().bad_signatures_from(N2) == k as u64 + 1
        })
        .await;
    }
    expect_nothing(&mut in3).await;
    assert_eq!(
        n3.stats().bad_signatures_from(N1),
        0,
        "blamed on node 2 only"
    );
    assert_eq!(n3.stats().frames_received.load(Ordering::Relaxed), 0);
    // The same bytes unflipped: delivered.
    n2.send_raw_frame(N3, &frame(&signed)).await.unwrap();
    expect_message(&mut in3, b"payload of node 2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_is_reconnected() {
    let c = Cluster::new(2);
    let (n1, r1) = c.start(N1).await;
    let (n2, r2) = c.start(N2).await;
    wait_until("connected", || n1.connected_peers() == [N2]).await;
    still_serving_pair(&n1, &r1, &n2, &r2, 1).await;
    n2.shutdown().await;
    drop(n2);
    wait_until("disconnect noticed", || n1.connected_peers().is_empty()).await;
    let (n2, r2) = c.start(N2).await;
    wait_until("reconnected", || n1.connected_peers() == [N2]).await;
    still_serving_pair(&n1, &r1, &n2, &r2, 2).await;
}

async fn still_serving_pair(
    a: &QuicMesh,
    ra: &Arc<Router>,
    b: &QuicMesh,
    rb: &Arc<Router>,
    tag: u8,
) {
    let mut inb = rb.register(SessionId([tag; 16]), &[N1, N2]).unwrap();
    let mut ina = ra.register(SessionId([tag; 16]), &[N1, N2]).unwrap();
    a.send(N2, envelope(tag, N1, None, b"a")).await.unwrap();
    b.send(N1, envelope(tag, N2, None, b"b")).await.unwrap();
    expect_message(&mut inb, b"a").await;
    expect_message(&mut ina, b"b").await;
}

/// A frame whose connection dies before the peer acknowledged it (here closed right after the
/// send returned, before anything went out) is resent on the next connection and delivered
/// once. On one runtime thread nothing runs between the send and the close, so the first copy
/// cannot have left.
#[tokio::test(flavor = "current_thread")]
async fn a_frame_lost_with_its_connection_is_resent() {
    let c = Cluster::new(2);
    let (n1, _r1) = c.start(N1).await;
    let (_n2, r2) = c.start(N2).await;
    wait_until("connected", || n1.connected_peers() == [N2]).await;
    let mut in2 = r2.register(SessionId([1; 16]), &[N1, N2]).unwrap();
    n1.send(N2, envelope(1, N1, Some(N2), b"lost once"))
        .await
        .unwrap();
    n1.drop_connection(N2);
    expect_message(&mut in2, b"lost once").await;
    assert_eq!(n1.stats().frames_resent.load(Ordering::Relaxed), 1);
    expect_nothing(&mut in2).await;
}

/// Frames node 3 has received or refused so far.
fn frames_seen(mesh: &QuicMesh) -> u64 {
    mesh.stats().frames_received.load(Ordering::Relaxed)
        + mesh.stats().frames_refused.load(Ordering::Relaxed)
}

fn over_quota(mesh: &QuicMesh) -> u64 {
    mesh.stats().frames_over_quota.load(Ordering::Relaxed)
}

/// Three nodes, all connected; node 3 started from `config3`.
async fn three_nodes(
    c: &Cluster,
    config3: MeshConfig,
) -> ([QuicMesh; 3], Arc<Router>, ControlInbox) {
    let (n1, _) = c.start(N1).await;
    let (n2, _) = c.start(N2).await;
    let (n3, r3, control3) = c.start_with_control(config3).await;
    wait_until("node 3 connected", || n3.connected_peers() == [N1, N2]).await;
    ([n1, n2, n3], r3, control3)
}

/// Node 2 sends node 3 as many messages for sessions node 3 does not run as the whole
/// holding area took before peers had shares; node 1's early message is still held and
/// delivered when its session registers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_hold_quota_does_not_crowd_out_another_peers_early_message() {
    let c = Cluster::new(3);
    let ([n1, n2, n3], r3, _control3) = three_nodes(&c, c.node_config(N3)).await;
    let flood = 4096;
    for i in 0..flood {
        n2.send(N3, envelope(2, N2, None, &u32::to_be_bytes(i)))
            .await
            .unwrap();
    }
    wait_until("the flood received", || {
        frames_seen(&n3) == u64::from(flood)
    })
    .await;
    let share = RouterLimits::default().max_held_messages_per_peer;
    assert_eq!(over_quota(&n3), u64::from(flood) - share as u64);
    assert_eq!(r3.held_count(), share);

    n1.send(N3, envelope(1, N1, None, b"early")).await.unwrap();
    wait_until("node 1's message held", || r3.held_count() == share + 1).await;
    let mut in3 = r3.register(SessionId([1; 16]), &[N1, N3]).unwrap();
    expect_message(&mut in3, b"early").await;
}

/// `from`'s message in session 1 reaches node 3's inbox `in3`.
async fn gets_through(mesh: &QuicMesh, from: NodeId, in3: &mut SessionInbox, payload: &[u8]) {
    mesh.send(N3, envelope(1, from, Some(N3), payload))
        .await
        .unwrap();
    expect_message(in3, payload).await;
}

/// The error code with which the receiver stopped a stalled stream, waiting up to 5 s.
async fn stop_code(stream: &quinn::SendStream) -> Option<quinn::VarInt> {
    tokio::time::timeout(Duration::from_secs(5), stream.stopped())
        .await
        .expect("the stalled stream was never reset")
        .expect("the connection was lost")
}

/// Node 2 opens a stream and writes half a frame, then nothing: node 3 resets the stream
/// after its frame deadline, and node 1's messages go through meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_frame_is_reset_after_the_deadline_while_another_peer_gets_through() {
    let c = Cluster::new(3);
    let mut config3 = c.node_config(N3);
    config3.frame_read_timeout = Duration::from_secs(1);
    let ([n1, n2, n3], r3, _control3) = three_nodes(&c, config3).await;
    let mut in3 = r3.register(SessionId([1; 16]), &[N1, N2, N3]).unwrap();

    let mut half = 100u32.to_be_bytes().to_vec();
    half.extend([0; 10]);
    let opened = Instant::now();
    let stalled = n2.open_raw_stream(N3, &half).await.unwrap();
    gets_through(&n1, N1, &mut in3, b"meanwhile").await;

    assert_eq!(stop_code(&stalled).await, Some(quinn::VarInt::from_u32(1)));
    assert!(opened.elapsed() >= Duration::from_secs(1));
    assert_eq!(over_quota(&n3), 1);
    // Node 2 is not shut out: its next whole frame is delivered.
    drop(stalled);
    gets_through(&n2, N2, &mut in3, b"whole").await;
}

/// Node 2 opens as many streams as node 3 allows a peer and stalls on each: its next stream
/// waits, node 1 still gets through, and once the deadline reset the stalled ones node 2's
/// next frame is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_many_open_streams_waits_while_another_gets_through() {
    let c = Cluster::new(3);
    let mut config3 = c.node_config(N3);
    config3.frame_read_timeout = Duration::from_secs(2);
    let streams = config3.max_streams_per_peer;
    let ([n1, n2, n3], r3, _control3) = three_nodes(&c, config3).await;
    let mut in3 = r3.register(SessionId([1; 16]), &[N1, N2, N3]).unwrap();

    let mut stalled = Vec::new();
    for _ in 0..streams {
        stalled.push(n2.open_raw_stream(N3, &[0]).await.unwrap());
    }
    let one_more = tokio::time::timeout(Duration::from_millis(500), n2.open_raw_stream(N3, &[0]));
    assert!(
        one_more.await.is_err(),
        "node 2 opened more than {streams} streams at once"
    );
    gets_through(&n1, N1, &mut in3, b"meanwhile").await;

    for stream in &stalled {
        assert!(stop_code(stream).await.is_some());
    }
    assert_eq!(over_quota(&n3), u64::from(streams));
    // Dropping a stopped stream resets it (as the mesh's own sender does), freeing its slot.
    drop(stalled);
    gets_through(&n2, N2, &mut in3, b"after").await;
}

/// Node 2 sends more control messages than its share of node 3's control queue while node 3
/// is not taking any: the excess is refused, and node 1's control message is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_flood_from_one_peer_does_not_drop_another_peers_control_messages() {
    let c = Cluster::new(3);
    let ([n1, n2, n3], _r3, mut control3) = three_nodes(&c, c.node_config(N3)).await;
    let control = |from: NodeId, payload: &[u8]| Envelope {
        protocol: CONTROL,
        round: 0,
        ..envelope(0, from, Some(N3), payload)
    };
    let share = RouterLimits::default().max_control_queue_per_peer;
    let flood = share as u32 + 100;
    for i in 0..flood {
        n2.send(N3, control(N2, &i.to_be_bytes())).await.unwrap();
    }
    wait_until("the flood received", || {
        frames_seen(&n3) == u64::from(flood)
    })
    .await;
    n1.send(N3, control(N1, b"proposal")).await.unwrap();
    wait_until("node 1's message received", || {
        frames_seen(&n3) == u64::from(flood) + 1
    })
    .await;

    let mut queued = [0usize; 3];
    while let Ok(Some(envelope)) =
        tokio::time::timeout(Duration::from_millis(200), control3.recv()).await
    {
        queued[usize::from(envelope.from.get())] += 1;
    }
    assert_eq!(queued[1], 1, "node 1's control message was lost");
    assert_eq!(queued[2], share);
    assert_eq!(over_quota(&n3), u64::from(flood) - share as u64);
}
