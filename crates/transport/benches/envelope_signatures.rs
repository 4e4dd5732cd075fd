//! What signing every envelope costs: one envelope signed with a node key (ECDSA P-256) and
//! encoded, then decoded and verified against the sender's certificate, as the transport does
//! for every message, at three payload sizes (a FROST/online-signing message, a control
//! message with a PSBT, an aux-info message).
//!
//! `cargo bench -p mpc-transport --bench envelope_signatures`

use std::time::{Duration, Instant};

use mpc_transport::{
    certs::{parse_certs, ClusterCa},
    Envelope, NodeId, NodeKey, SessionId,
};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn main() {
    let ca = ClusterCa::generate("bench", 1).expect("CA");
    let issued = ca
        .issue_node(NodeId::must(2), &[], time::OffsetDateTime::now_utc(), 1)
        .expect("node certificate");
    let key = NodeKey::from_pem(&issued.key_pem).expect("node key");
    let cert = parse_certs(&issued.cert_pem)
        .expect("certificate")
        .remove(0);
    println!("| payload | iterations | sign + encode p50 µs | p90 µs | decode + verify p50 µs | p90 µs |");
    println!("|---|---|---|---|---|---|");
    for (size, iterations) in [(200usize, 5000usize), (10_000, 2000), (210_000, 200)] {
        let envelope = Envelope {
            protocol: 7,
            session: SessionId([5; 16]),
            round: 1,
            from: NodeId::must(2),
            to: Some(NodeId::must(1)),
            payload: vec![0xa5; size],
            signature: None,
        };
        let mut sign = Vec::with_capacity(iterations);
        let mut verify = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let t = Instant::now();
            let bytes = envelope.clone().signed(&key).expect("sign").encode();
            sign.push(t.elapsed());
            let t = Instant::now();
            let decoded = Envelope::decode(&bytes).expect("decode");
            decoded.verify(&cert).expect("verify");
            verify.push(t.elapsed());
        }
        sign.sort_unstable();
        verify.sort_unstable();
        println!(
            "| {size} B | {iterations} | {:.1} | {:.1} | {:.1} | {:.1} |",
            percentile(&sign, 0.5),
            percentile(&sign, 0.9),
            percentile(&verify, 0.5),
            percentile(&verify, 0.9),
        );
    }
}
