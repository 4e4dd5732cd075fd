//! The etcd backend against a real etcd (`scripts/with-etcd` starts one and sets
//! `MPC_TEST_ETCD_ENDPOINTS`). Without it every test prints why it skipped, unless
//! `MPC_REQUIRE_ETCD` is set, in which case they fail.
//!
//! Tests that need a process that can be paused or killed re-run this test binary as a child
//! (`child_process`, selected by `MPC_COORDINATION_CHILD`), and talk to it over stdin/stdout.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mpc_coordination::{
    split_endpoints, ClusterBackend, EtcdBackend, FencingToken, Holder, TokenRefusal, TokenSource,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use uuid::Uuid;

use mpc_testkit::ETCD_ENDPOINTS_ENV as ENDPOINTS_ENV;
const CHILD_ENV: &str = "MPC_COORDINATION_CHILD";
/// The lock keygen and aux info run under, as a participant checks its proposals' tokens.
const CEREMONY: TokenSource<'static> = TokenSource::Lock("ceremony");
/// Short leases where a test waits for one to expire; etcd's minimum with default timing is 2 s.
const TTL: Duration = Duration::from_secs(2);
/// Where no lease should expire: long enough that a loaded machine (the whole workspace's
/// tests at once on two cores) does not miss a keep-alive.
const LONG_TTL: Duration = Duration::from_secs(10);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "mpc_coordination=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// The endpoints, or `None` (after printing why) if no etcd was provided.
fn endpoints() -> Option<Vec<String>> {
    init_tracing();
    mpc_testkit::test_etcd_endpoints()
}

/// A prefix of its own for every test, so tests (and runs) sharing one etcd do not meet.
fn fresh_prefix() -> String {
    format!("/mpc-test-{}", Uuid::new_v4().simple())
}

async fn backend(endpoints: &[String], prefix: &str) -> ClusterBackend {
    ClusterBackend::Etcd(EtcdBackend::connect(endpoints, prefix).await.unwrap())
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

// ---- (i) lock contention ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_contention_one_holder_at_a_time_and_tokens_increase() {
    let Some(endpoints) = endpoints() else { return };
    let prefix = fresh_prefix();
    const ROUNDS: u64 = 15;

    // Two coordinators with their own connections race for one lock. Under the lock each
    // does a non-atomic read-modify-write of a counter key in etcd: any overlap loses updates.
    let held = Arc::new(AtomicBool::new(false));
    let last_token = Arc::new(Mutex::new(FencingToken(0)));
    // (who released, when): to measure the hand-off to the other coordinator.
    let last_release: Arc<Mutex<Option<(usize, Instant)>>> = Arc::new(Mutex::new(None));
    let handoffs = Arc::new(Mutex::new(Vec::new()));
    let counter_key = format!("{prefix}/counter");
    let mut tasks = Vec::new();
    for who in 0..2usize {
        let coordinator = backend(&endpoints, &prefix).await;
        let ClusterBackend::Etcd(etcd) = &coordinator else {
            unreachable!()
        };
        let mut kv = etcd.client().kv_client();
        let (held, last_token, last_release, handoffs, counter_key) = (
            held.clone(),
            last_token.clone(),
            last_release.clone(),
            handoffs.clone(),
            counter_key.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let guard = coordinator.lock("keygen", LONG_TTL).await.unwrap();
                let acquired = Instant::now();
                assert!(!held.swap(true, Ordering::SeqCst), "two holders at once");
                if let Some((from, at)) = *last_release.lock().unwrap() {
                    if from != who {
                        handoffs.lock().unwrap().push(acquired - at);
                    }
                }
                {
                    let mut last = last_token.lock().unwrap();
                    assert!(
                        guard.token() > *last,
                        "token {} after {}",
                        guard.token(),
                        *last
                    );
                    *last = guard.token();
                }
                let current = kv.get(counter_key.clone(), None).await.unwrap();
                let value: u64 = current
                    .kvs()
                    .first()
                    .map(|kv| kv.value_str().unwrap().parse().unwrap())
                    .unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(5)).await;
                kv.put(counter_key.clone(), (value + 1).to_string(), None)
                    .await
                    .unwrap();
                guard.check().unwrap();
                held.store(false, Ordering::SeqCst);
                *last_release.lock().unwrap() = Some((who, Instant::now()));
                guard.unlock().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    let coordinator = backend(&endpoints, &prefix).await;
    let ClusterBackend::Etcd(etcd) = &coordinator else {
        unreachable!()
    };
    let total = etcd
        .client()
        .kv_client()
        .get(counter_key, None)
        .await
        .unwrap();
    let total: u64 = total.kvs()[0].value_str().unwrap().parse().unwrap();
    assert_eq!(total, 2 * ROUNDS, "an update was lost: the lock let two in");

    let mut handoffs = handoffs.lock().unwrap().clone();
    assert!(!handoffs.is_empty(), "the lock never changed hands");
    let count = handoffs.len();
    let max = handoffs.iter().max().copied().unwrap_or_default();
    let median = median(&mut handoffs);
    println!(
        "lock hand-off between coordinators: {count} hand-offs, median {median:?}, max {max:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_lock_attempt_leaves_nothing_behind() {
    let Some(endpoints) = endpoints() else { return };
    let prefix = fresh_prefix();
    let a = backend(&endpoints, &prefix).await;
    let b = backend(&endpoints, &prefix).await;
    let held = a.lock("refill", LONG_TTL).await.unwrap();
    // b waits, gives up; its queued key must not block the next holder.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), b.lock("refill", LONG_TTL))
            .await
            .is_err()
    );
    held.unlock().await.unwrap();
    let started = Instant::now();
    let next = tokio::time::timeout(LONG_TTL, a.lock("refill", LONG_TTL))
        .await
        .expect("a cancelled waiter blocked the lock")
        .unwrap();
    println!("lock after a cancelled waiter: {:?}", started.elapsed());
    next.unlock().await.unwrap();

    // Prefixes isolate clusters: the same lock name under another prefix is independent.
    let other = backend(&endpoints, &fresh_prefix()).await;
    let _mine = a.lock("keygen", LONG_TTL).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), other.lock("keygen", LONG_TTL))
        .await
        .expect("another prefix's lock contended")
        .unwrap();
}

// ---- (ii) fencing under lock loss ----

/// Sends `<rest>` of every `CHILD <rest>` in a child's stdout, with the child's index (the
/// first may share its line with libtest's `test child_process ... `).
async fn forward_lines(
    index: usize,
    child: &mut Child,
    lines: mpsc::UnboundedSender<(usize, String)>,
) {
    let stdout = child.stdout.take().unwrap();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if let Some(at) = line.find("CHILD ") {
                if lines.send((index, line[at + 6..].to_owned())).is_err() {
                    break;
                }
            }
        }
    });
}

fn spawn_child(role: &str, envs: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new(exe);
    command
        .args([
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (key, value) in envs {
        command.env(key, value);
    }
    command.spawn().unwrap()
}

async fn expect_line(
    lines: &mut mpsc::UnboundedReceiver<(usize, String)>,
    within: Duration,
) -> (usize, String) {
    tokio::time::timeout(within, lines.recv())
        .await
        .expect("no line from the child in time")
        .expect("the child's stdout closed")
}

fn signal(child: &Child, signal: Signal) {
    let pid = child.id().expect("child already reaped");
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), signal).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_holder_past_its_lease_is_fenced_off() {
    let Some(endpoints) = endpoints() else { return };
    let prefix = fresh_prefix();
    let mut child = spawn_child(
        "fence",
        &[
            (ENDPOINTS_ENV, endpoints.join(",")),
            ("MPC_CHILD_PREFIX", prefix.clone()),
        ],
    );
    let (tx, mut lines) = mpsc::unbounded_channel();
    forward_lines(0, &mut child, tx).await;
    let (_, line) = expect_line(&mut lines, Duration::from_secs(60)).await;
    let old: u64 = line
        .strip_prefix("LOCKED ")
        .unwrap_or_else(|| panic!("unexpected {line:?}"))
        .parse()
        .unwrap();

    // The child holds the lock: we cannot take it.
    let parent = backend(&endpoints, &prefix).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), parent.lock("ceremony", TTL))
            .await
            .is_err(),
        "the lock was free while the child held it"
    );

    // Pause the child past its lease; the lock comes to us with a higher token.
    signal(&child, Signal::SIGSTOP);
    let paused = Instant::now();
    let guard = tokio::time::timeout(4 * TTL, parent.lock("ceremony", TTL))
        .await
        .expect("the paused child's lease did not expire")
        .unwrap();
    let takeover = paused.elapsed();
    assert!(
        guard.token().0 > old,
        "new token {} <= old {old}",
        guard.token()
    );
    assert_eq!(
        parent.check_token(CEREMONY, guard.token()).await.unwrap(),
        Ok(())
    );
    println!(
        "lock taken over {takeover:?} after pausing its holder (lease {TTL:?}); tokens {old} -> {}",
        guard.token()
    );

    // Resume the child: it still believes it holds the lock and asks to act with its token,
    // which the node asked checks against etcd.
    signal(&child, Signal::SIGCONT);
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(b"GO\n").await.unwrap();
    stdin.flush().await.unwrap();
    let (_, line) = expect_line(&mut lines, Duration::from_secs(30)).await;
    let token: u64 = line
        .strip_prefix("ACT ")
        .unwrap_or_else(|| panic!("unexpected {line:?}"))
        .parse()
        .unwrap();
    let refusal = parent
        .check_token(CEREMONY, FencingToken(token))
        .await
        .unwrap()
        .expect_err("the stale holder's action was admitted");
    assert_eq!(
        refusal,
        TokenRefusal::Stale {
            resource: "ceremony".into(),
            token: FencingToken(old),
            current: Holder::Held {
                token: guard.token(),
                candidate: None
            },
        }
    );
    println!("the resumed holder's token was refused: {refusal}");
    let (_, line) = expect_line(&mut lines, Duration::from_secs(30)).await;
    assert_eq!(
        line, "LOSS-REPORTED true",
        "the stale holder was not told of the loss"
    );
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "child failed: {status}");
    guard.check().unwrap();
    guard.unlock().await.unwrap();
}

/// A participant's check (`ClusterBackend::check_token`) against a real etcd: only the token of
/// whoever holds the lock right now passes; a made-up larger one never does, whether the lock
/// is held or free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_current_lock_holders_token_passes_the_check() {
    let Some(endpoints) = endpoints() else { return };
    let prefix = fresh_prefix();
    let a = backend(&endpoints, &prefix).await;
    let b = backend(&endpoints, &prefix).await;
    let check = |token: u64| b.check_token(CEREMONY, FencingToken(token));
    let bogus = 1u64 << 60;

    let first = a.lock("ceremony", LONG_TTL).await.unwrap();
    let t1 = first.token().0;
    assert_eq!(check(t1).await.unwrap(), Ok(()));
    for (token, stale) in [
        (t1 - 1, true),
        (t1 + 1, false),
        (bogus, false),
        (u64::MAX, false),
    ] {
        let refusal = check(token).await.unwrap().unwrap_err();
        assert_eq!(
            matches!(refusal, TokenRefusal::Stale { .. }),
            stale,
            "{refusal}"
        );
        assert!(
            refusal.to_string().contains(&format!("token is {t1}")),
            "{refusal}"
        );
    }
    first.unlock().await.unwrap();

    // Released: the old holder's token is stale, a made-up one is ahead of etcd itself.
    assert!(matches!(
        check(t1).await.unwrap(),
        Err(TokenRefusal::Stale {
            current: Holder::Free { .. },
            ..
        })
    ));
    assert!(matches!(
        check(bogus).await.unwrap(),
        Err(TokenRefusal::Ahead {
            current: Holder::Free { .. },
            ..
        })
    ));

    // The next holder's token passes; the first holder's stays stale.
    let second = a.lock("ceremony", LONG_TTL).await.unwrap();
    assert!(second.token().0 > t1);
    assert_eq!(check(second.token().0).await.unwrap(), Ok(()));
    assert!(matches!(
        check(t1).await.unwrap(),
        Err(TokenRefusal::Stale { .. })
    ));
    // Another lock's holder says nothing about this one.
    let other = a.lock("refill", LONG_TTL).await.unwrap();
    assert!(check(other.token().0).await.unwrap().is_err());
    second.unlock().await.unwrap();
    other.unlock().await.unwrap();
}

/// The same for an election: the leader's token passes only when the leader proposes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_current_leader_passes_the_check_with_its_token() {
    let Some(endpoints) = endpoints() else { return };
    let prefix = fresh_prefix();
    let a = backend(&endpoints, &prefix).await;
    let b = backend(&endpoints, &prefix).await;
    let proposed_by = |candidate| TokenSource::Leader {
        election: "pool-refill",
        candidate,
    };

    let leadership = a.campaign("pool-refill", "2", LONG_TTL).await.unwrap();
    let token = leadership.token();
    assert_eq!(
        b.check_token(proposed_by("2"), token).await.unwrap(),
        Ok(())
    );
    let refusal = b
        .check_token(proposed_by("3"), token)
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&refusal, TokenRefusal::OtherCandidate { leader, proposer, .. }
            if leader == "2" && proposer == "3"),
        "{refusal}"
    );
    assert!(matches!(
        b.check_token(proposed_by("2"), FencingToken(token.0 + 1))
            .await
            .unwrap(),
        Err(TokenRefusal::Ahead { .. })
    ));
    leadership.resign().await.unwrap();
    assert!(matches!(
        b.check_token(proposed_by("2"), token).await.unwrap(),
        Err(TokenRefusal::Stale { .. })
    ));
}

// ---- (iii) leader failover ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_is_replaced_within_two_lease_periods() {
    let Some(endpoints) = endpoints() else { return };
    let prefix = fresh_prefix();
    let (tx, mut lines) = mpsc::unbounded_channel();
    let mut children = Vec::new();
    for index in 0..3 {
        let mut child = spawn_child(
            "candidate",
            &[
                (ENDPOINTS_ENV, endpoints.join(",")),
                ("MPC_CHILD_PREFIX", prefix.clone()),
                ("MPC_CHILD_ID", format!("node-{index}")),
            ],
        );
        forward_lines(index, &mut child, tx.clone()).await;
        children.push(child);
    }
    let observer = backend(&endpoints, &prefix).await;

    // Everyone campaigns; exactly one leads.
    let mut campaigning = 0;
    let (leader_index, first_token) = loop {
        let (index, line) = expect_line(&mut lines, Duration::from_secs(60)).await;
        if line.starts_with("CAMPAIGNING") {
            campaigning += 1;
        } else if let Some(rest) = line.strip_prefix("LEADER ") {
            let token: u64 = rest.parse().unwrap();
            break (index, token);
        }
    };
    let info = observer.leader("pool-refill").await.unwrap().unwrap();
    assert_eq!(info.candidate, format!("node-{leader_index}"));
    assert_eq!(info.token, FencingToken(first_token));
    // Let the others queue up behind the leader.
    while campaigning < 3 {
        let (_, line) = expect_line(&mut lines, Duration::from_secs(60)).await;
        assert!(line.starts_with("CAMPAIGNING"), "unexpected {line:?}");
        campaigning += 1;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Kill the leader without a chance to resign: its lease has to expire.
    signal(&children[leader_index], Signal::SIGKILL);
    let killed = Instant::now();
    let (new_index, new_token) = loop {
        let (index, line) = expect_line(&mut lines, 4 * TTL).await;
        if let Some(rest) = line.strip_prefix("LEADER ") {
            break (index, rest.parse::<u64>().unwrap());
        }
    };
    let failover = killed.elapsed();
    let observed = observer.leader("pool-refill").await.unwrap().unwrap();
    println!(
        "leader failover: node-{leader_index} killed, node-{new_index} leads after {failover:?} \
         (lease {TTL:?}); tokens {first_token} -> {new_token}"
    );
    assert_ne!(new_index, leader_index);
    assert_eq!(observed.candidate, format!("node-{new_index}"));
    assert!(new_token > first_token);
    assert!(
        failover <= 2 * TTL,
        "failover took {failover:?}, more than two lease periods"
    );
    for child in &mut children {
        let _ = child.start_kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_handles_follow_leadership() {
    let Some(endpoints) = endpoints() else { return };
    let prefix = fresh_prefix();
    let a = backend(&endpoints, &prefix).await;
    let b = backend(&endpoints, &prefix).await;
    let mut first = a.spawn_election("pool-refill", "a", LONG_TTL);
    let first_token = match first.current() {
        Some(token) => token,
        None => tokio::time::timeout(Duration::from_secs(10), first.changed())
            .await
            .unwrap()
            .unwrap(),
    };
    let mut second = b.spawn_election("pool-refill", "b", LONG_TTL);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_leader());
    // Dropping the handle gives leadership up (the lease is revoked, no expiry wait).
    let dropped = Instant::now();
    drop(first);
    let second_token = tokio::time::timeout(Duration::from_secs(10), second.changed())
        .await
        .unwrap()
        .unwrap();
    println!(
        "leadership handed over {:?} after the leader stepped down",
        dropped.elapsed()
    );
    assert!(second_token > first_token);
    let info = a.leader("pool-refill").await.unwrap().unwrap();
    assert_eq!(info.candidate, "b");
}

// ---- children ----

/// Runs as a child process when `MPC_COORDINATION_CHILD` is set; a no-op otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    init_tracing();
    let endpoints = split_endpoints(&std::env::var(ENDPOINTS_ENV).unwrap());
    let prefix = std::env::var("MPC_CHILD_PREFIX").unwrap();
    let coordinator = backend(&endpoints, &prefix).await;
    match role.as_str() {
        "fence" => {
            let mut guard = coordinator.lock("ceremony", TTL).await.unwrap();
            println!("CHILD LOCKED {}", guard.token());
            // Paused and resumed by the parent somewhere around here.
            let mut stdin = BufReader::new(tokio::io::stdin()).lines();
            let go = stdin.next_line().await.unwrap();
            assert_eq!(go.as_deref(), Some("GO"));
            // A coordinator that does not look at its guard: the node it asks must stop it.
            println!("CHILD ACT {}", guard.token());
            let reported = tokio::time::timeout(Duration::from_secs(10), guard.lost())
                .await
                .is_ok();
            println!("CHILD LOSS-REPORTED {}", reported && guard.is_lost());
        }
        "candidate" => {
            let id = std::env::var("MPC_CHILD_ID").unwrap();
            println!("CHILD CAMPAIGNING {id}");
            let mut leadership = coordinator.campaign("pool-refill", &id, TTL).await.unwrap();
            println!("CHILD LEADER {}", leadership.token());
            leadership.lost().await;
            println!("CHILD LOST");
        }
        other => panic!("unknown child role {other}"),
    }
}
