//! The router's unit tests: sessions, rounds, senders, replays, holds and quotas.
use futures::FutureExt;

use super::*;

const N1: NodeId = NodeId::must(1);
const N2: NodeId = NodeId::must(2);
const N3: NodeId = NodeId::must(3);
const N4: NodeId = NodeId::must(4);
const N5: NodeId = NodeId::must(5);

fn env(session: u8, from: NodeId, round: u16, payload: &[u8]) -> Envelope {
    Envelope {
        protocol: 1,
        session: SessionId([session; 16]),
        round,
        from,
        to: None,
        payload: payload.to_vec(),
        signature: None,
    }
}

fn limits() -> RouterLimits {
    RouterLimits {
        hold_time: Duration::from_millis(200),
        max_held_messages_per_peer: 3,
        max_held_bytes_per_peer: 1 << 20,
        finished_memory: 2,
        control_memory_per_peer: 2,
        max_control_queue_per_peer: 8,
        max_control_queue_bytes_per_peer: 1 << 20,
    }
}

fn control(session: u8, from: NodeId, payload: &[u8]) -> Envelope {
    Envelope {
        protocol: crate::CONTROL,
        ..env(session, from, 0, payload)
    }
}

/// The control message waiting in the inbox now, if any.
fn next_control(inbox: &mut ControlInbox) -> Option<Envelope> {
    inbox.recv().now_or_never().flatten()
}

#[tokio::test]
async fn delivers_holds_dedups_and_refuses() {
    let (router, mut control_inbox) = Router::new(N1, limits());
    // Early message: held, then delivered on registration.
    assert_eq!(router.deliver(N2, env(7, N2, 1, b"a")), Ok(Routed::Held));
    let mut inbox = router.register(SessionId([7; 16]), &[N1, N2, N3]).unwrap();
    assert!(matches!(inbox.recv().await, Some(SessionEvent::Message(e)) if e.payload == b"a"));
    // Duplicate of the held one: dropped.
    assert_eq!(
        router.deliver(N2, env(7, N2, 1, b"a")),
        Ok(Routed::Duplicate)
    );
    // Same round, different content: equivocation, and the session gets a fault.
    assert!(matches!(
        router.deliver(N2, env(7, N2, 1, b"b")),
        Err(Refusal::Equivocation {
            from,
            round: 1,
            ..
        }) if from == N2
    ));
    match inbox.recv().await {
        Some(SessionEvent::Fault { envelopes, .. }) => {
            let payloads: Vec<&[u8]> = envelopes.iter().map(|e| &e.payload[..]).collect();
            assert_eq!(
                payloads,
                [&b"a"[..], &b"b"[..]],
                "both messages kept as evidence"
            );
        }
        other => panic!("{other:?}"),
    }
    // Stranger: refused.
    assert!(matches!(
        router.deliver(N4, env(7, N4, 1, b"x")),
        Err(Refusal::NotParticipant { from, .. }) if from == N4
    ));
    // Wrong claimed sender.
    assert!(matches!(
        router.deliver(N3, env(7, N2, 2, b"x")),
        Err(Refusal::Impersonation { claimed, actual })
            if claimed == N2 && actual == N3
    ));
    // Addressed to someone else.
    let mut other = env(7, N3, 2, b"x");
    other.to = Some(N5);
    assert_eq!(router.deliver(N3, other), Err(Refusal::WrongRecipient(N5)));
    // Control bypasses sessions.
    assert_eq!(
        router.deliver(N3, control(9, N3, b"ctl")),
        Ok(Routed::Control)
    );
    assert_eq!(control_inbox.recv().await.unwrap().payload, b"ctl");
    // A resent copy of a control message is dropped; the same content from another
    // sender or in another session is not a copy.
    let copy = control(9, N3, b"ctl");
    assert_eq!(router.deliver(N3, copy.clone()), Ok(Routed::Duplicate));
    assert_eq!(
        router.deliver(N3, control(10, N3, b"ctl")),
        Ok(Routed::Control)
    );
    assert_eq!(
        router.deliver(N2, control(9, N2, b"ctl")),
        Ok(Routed::Control)
    );
    assert!(next_control(&mut control_inbox).is_some());
    assert!(next_control(&mut control_inbox).is_some());
    assert!(next_control(&mut control_inbox).is_none());
    // Memory is bounded (2 per peer here): the oldest is forgotten.
    assert_eq!(
        router.deliver(N3, control(11, N3, b"ctl")),
        Ok(Routed::Control)
    );
    assert_eq!(router.deliver(N3, copy), Ok(Routed::Control));
    // Finished: replays refused, re-registration refused.
    drop(inbox);
    assert!(matches!(
        router.deliver(N3, env(7, N3, 3, b"late")),
        Err(Refusal::FinishedSession(_))
    ));
    assert_eq!(
        router.register(SessionId([7; 16]), &[N1, N2]).err(),
        Some(RegisterError::AlreadyFinished(SessionId([7; 16])))
    );
}

#[tokio::test]
async fn holding_is_bounded_in_count_and_time() {
    let (router, _control) = Router::new(N1, limits());
    for s in 0..3 {
        assert_eq!(router.deliver(N2, env(s, N2, 1, b"x")), Ok(Routed::Held));
    }
    assert_eq!(
        router.deliver(N2, env(3, N2, 1, b"x")),
        Err(Refusal::HoldQuotaExceeded {
            session: SessionId([3; 16]),
            from: N2
        })
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(router.held_count(), 0);
    // Expired held messages are not delivered on a late registration.
    let mut inbox = router.register(SessionId([0; 16]), &[N1, N2]).unwrap();
    assert!(inbox.receiver().try_recv().is_err());
    // Non-participants held before registration are refused at registration.
    assert_eq!(router.deliver(N5, env(4, N5, 1, b"x")), Ok(Routed::Held));
    let mut inbox = router.register(SessionId([4; 16]), &[N1, N2]).unwrap();
    assert!(inbox.receiver().try_recv().is_err());
}

#[tokio::test]
async fn held_messages_are_bounded_per_peer_in_bytes_and_count() {
    let (router, _control) = Router::new(
        N1,
        RouterLimits {
            max_held_bytes_per_peer: 100,
            ..limits()
        },
    );
    // Node 2 fills its 100 bytes; what would exceed them is refused.
    assert_eq!(
        router.deliver(N2, env(1, N2, 1, &[0; 60])),
        Ok(Routed::Held)
    );
    assert_eq!(
        router.deliver(N2, env(2, N2, 1, &[0; 41])),
        Err(Refusal::HoldQuotaExceeded {
            session: SessionId([2; 16]),
            from: N2
        })
    );
    assert_eq!(
        router.deliver(N2, env(2, N2, 1, &[0; 40])),
        Ok(Routed::Held)
    );
    assert!(router.deliver(N2, env(3, N2, 1, &[0; 1])).is_err());
    // Node 3's share is its own: a full 100 bytes, then its count (3) is the bound.
    assert_eq!(
        router.deliver(N3, env(4, N3, 1, &[0; 100])),
        Ok(Routed::Held)
    );
    assert_eq!(router.deliver(N3, env(5, N3, 1, b"")), Ok(Routed::Held));
    assert_eq!(router.deliver(N3, env(6, N3, 1, b"")), Ok(Routed::Held));
    assert!(matches!(
        router.deliver(N3, env(7, N3, 1, b"")),
        Err(Refusal::HoldQuotaExceeded { from, .. }) if from == N3
    ));
    assert_eq!(router.held_count(), 5);
    // Node 3's early message is delivered when its session registers.
    let mut inbox = router.register(SessionId([4; 16]), &[N1, N3]).unwrap();
    assert!(matches!(inbox.recv().await, Some(SessionEvent::Message(e)) if e.from == N3));
    // Delivering node 2's held messages frees its share.
    let _first = router.register(SessionId([1; 16]), &[N1, N2]).unwrap();
    assert_eq!(
        router.deliver(N2, env(8, N2, 1, &[0; 60])),
        Ok(Routed::Held)
    );
    assert_eq!(router.held_count(), 4);
}

#[tokio::test]
async fn the_control_queue_is_bounded_per_peer_and_freed_as_the_node_takes_messages() {
    let (router, mut inbox) = Router::new(N1, limits());
    for i in 0..8u8 {
        assert_eq!(
            router.deliver(N2, control(i, N2, b"flood")),
            Ok(Routed::Control)
        );
    }
    assert_eq!(
        router.deliver(N2, control(8, N2, b"flood")),
        Err(Refusal::ControlQuotaExceeded {
            session: SessionId([8; 16]),
            from: N2
        })
    );
    // Node 2's full share does not touch node 3's.
    assert_eq!(
        router.deliver(N3, control(0, N3, b"mine")),
        Ok(Routed::Control)
    );
    // The node takes one of node 2's: its place is free again, and the refused message,
    // sent again, is queued (it was never remembered as seen).
    assert_eq!(next_control(&mut inbox).map(|e| e.from), Some(N2));
    assert_eq!(
        router.deliver(N2, control(8, N2, b"flood")),
        Ok(Routed::Control)
    );
    let mut from_3 = 0;
    while let Some(envelope) = next_control(&mut inbox) {
        from_3 += usize::from(envelope.from == N3);
    }
    assert_eq!(from_3, 1);

    // The bytes are bounded too.
    let (router, _inbox) = Router::new(
        N1,
        RouterLimits {
            max_control_queue_bytes_per_peer: 10,
            ..limits()
        },
    );
    assert_eq!(
        router.deliver(N2, control(0, N2, &[0; 8])),
        Ok(Routed::Control)
    );
    assert!(router.deliver(N2, control(1, N2, &[0; 3])).is_err());
    assert_eq!(
        router.deliver(N3, control(0, N3, &[0; 10])),
        Ok(Routed::Control)
    );
}

#[tokio::test]
async fn a_control_flood_does_not_make_the_router_forget_another_peers_messages() {
    let (router, mut inbox) = Router::new(N1, limits());
    let resent = control(0, N3, b"proposal");
    assert_eq!(router.deliver(N3, resent.clone()), Ok(Routed::Control));
    // Node 2 sends more distinct messages than the memory holds (2 per peer here).
    for i in 0..4u8 {
        assert_eq!(
            router.deliver(N2, control(i, N2, b"flood")),
            Ok(Routed::Control)
        );
    }
    while next_control(&mut inbox).is_some() {}
    // Node 3's resent copy is still recognised and dropped.
    assert_eq!(router.deliver(N3, resent), Ok(Routed::Duplicate));
}

#[tokio::test]
async fn finished_memory_is_bounded() {
    let (router, _control) = Router::new(N1, limits());
    for s in 0..3u8 {
        drop(router.register(SessionId([s; 16]), &[N1, N2]).unwrap());
    }
    // Memory holds the last 2: session 0 was forgotten (the store remembers it durably).
    assert!(router.register(SessionId([0; 16]), &[N1, N2]).is_ok());
    assert!(router.register(SessionId([2; 16]), &[N1, N2]).is_err());
}
