//! The cost curve (issue 22 item 4): for n = 3, 5, 7, 9 parties and thresholds t = n/2+1 and
//! t = n−1, each phase in process over `mpc_protocols::sim`: per-party CPU (each party's
//! thread, `CLOCK_THREAD_CPUTIME_ID`), wall time, and the messages and CBOR bytes each party
//! sends. Writes `target/cost-curve/cost-curve.{csv,json,png}`.
//!
//! `nice -n 10 cargo bench -p mpc-wallet --bench cost_curve [-- --nodes 3,5 --quick]`
//! `cargo bench -p mpc-wallet --bench cost_curve -- --plot target/cost-curve/cost-curve.json`
//! redraws the plot from a run's JSON without measuring.

use std::{path::PathBuf, time::Instant};

use mpc_protocols::{ecdsa::SighashPreimage, local, sim, DerivationPath, PartyIndex};
use serde::{Deserialize, Serialize};

#[path = "../common/mod.rs"]
mod common;
mod plot;

use common::{cores, fixture_primes, BACKEND};

/// One phase at one (n, t), averaged over its iterations.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    pub phase: String,
    pub n: u16,
    /// `None` for aux info, which does not depend on t.
    pub t: Option<u16>,
    pub backend: String,
    pub iterations: usize,
    /// Median wall time of one iteration.
    pub wall_ms: f64,
    /// CPU of one party's thread per iteration: the mean over the parties, and the largest.
    pub cpu_ms_per_party: f64,
    pub cpu_ms_max_party: f64,
    /// CPU of the calling thread (the coordinator's combine or aggregate, or the whole phase
    /// where it runs on one thread: ECDSA signing from presignatures).
    pub cpu_ms_caller: f64,
    pub messages_per_party: f64,
    pub bytes_per_party: f64,
}

/// What a phase runs and how its cost is attributed.
struct Phase {
    name: &'static str,
    n: u16,
    t: Option<u16>,
    /// Parties taking part (n, or the t signers).
    parties: u16,
    /// In process, every party's part runs on the calling thread (no simulated run): the
    /// caller's CPU is shared out evenly.
    on_caller: bool,
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The calling thread's CPU since `before`, in ms (0 where the clock cannot be read).
fn thread_cpu_ms(before: Option<std::time::Duration>) -> f64 {
    before
        .zip(sim::thread_cpu())
        .map(|(b, a)| ms(a.saturating_sub(b)))
        .unwrap_or(0.0)
}

struct Recorder {
    points: Vec<Point>,
    out: PathBuf,
}

impl Recorder {
    fn measure<T>(&mut self, phase: Phase, iterations: usize, mut f: impl FnMut() -> T) -> Vec<T> {
        let parties = usize::from(phase.parties);
        let (mut cpu, mut msgs, mut bytes) = (vec![0.0; parties], 0u64, 0u64);
        let (mut caller, mut walls, mut outs) = (0.0, Vec::new(), Vec::new());
        for _ in 0..iterations {
            let caller0 = sim::thread_cpu();
            let started = Instant::now();
            let (out, runs) = sim::measured(&mut f);
            walls.push(ms(started.elapsed()));
            caller += thread_cpu_ms(caller0);
            for run in runs {
                for (i, c) in run.iter().enumerate() {
                    cpu[i % parties] += ms(c.cpu);
                    msgs += c.messages;
                    bytes += c.bytes;
                }
            }
            outs.push(out);
        }
        let per_iter = |x: f64| x / iterations as f64;
        if phase.on_caller {
            cpu.iter_mut().for_each(|c| *c = caller / parties as f64);
        }
        walls.sort_by(f64::total_cmp);
        let point = Point {
            phase: phase.name.into(),
            n: phase.n,
            t: phase.t,
            backend: BACKEND.into(),
            iterations,
            wall_ms: walls[walls.len() / 2],
            cpu_ms_per_party: per_iter(cpu.iter().sum::<f64>() / parties as f64),
            cpu_ms_max_party: per_iter(cpu.iter().copied().fold(0.0, f64::max)),
            cpu_ms_caller: per_iter(caller),
            messages_per_party: per_iter(msgs as f64 / parties as f64),
            bytes_per_party: per_iter(bytes as f64 / parties as f64),
        };
        print_row(&point);
        self.points.push(point);
        // Written after every phase: a long run that is stopped keeps what it measured.
        self.write();
        outs
    }

    fn write(&self) {
        std::fs::create_dir_all(&self.out).expect("output directory");
        let mut csv = String::from(
            "phase,n,t,backend,iterations,wall_ms,cpu_ms_per_party,cpu_ms_max_party,\
             cpu_ms_caller,messages_per_party,bytes_per_party\n",
        );
        for p in &self.points {
            csv.push_str(&format!(
                "{},{},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.1},{:.0}\n",
                p.phase,
                p.n,
                p.t.map(|t| t.to_string()).unwrap_or_default(),
                p.backend,
                p.iterations,
                p.wall_ms,
                p.cpu_ms_per_party,
                p.cpu_ms_max_party,
                p.cpu_ms_caller,
                p.messages_per_party,
                p.bytes_per_party
            ));
        }
        std::fs::write(self.out.join("cost-curve.csv"), csv).expect("write csv");
        let json = serde_json::to_vec_pretty(&self.points).expect("json");
        std::fs::write(self.out.join("cost-curve.json"), json).expect("write json");
    }
}

fn print_row(p: &Point) {
    println!(
        "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |",
        p.phase,
        p.n,
        p.t.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
        p.iterations,
        p.cpu_ms_per_party,
        p.cpu_ms_max_party,
        p.cpu_ms_caller,
        p.wall_ms,
        p.messages_per_party,
        p.bytes_per_party
    );
}

/// The thresholds of the curve: a majority and all but one (the same for n = 3).
fn thresholds(n: u16) -> Vec<u16> {
    let mut ts = vec![n / 2 + 1, n - 1];
    ts.dedup();
    ts
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1).cloned()
}

fn main() {
    let out = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").into())
        .join("cost-curve");
    if let Some(json) = arg("--plot") {
        let points: Vec<Point> =
            serde_json::from_slice(&std::fs::read(&json).expect("read the points"))
                .expect("parse the points");
        plot::render(&points, &out.join("cost-curve.png")).expect("plot");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let it = |full: usize| if quick { 1 } else { full };
    let nodes: Vec<u16> = arg("--nodes")
        .unwrap_or_else(|| "3,5,7,9".into())
        .split(',')
        .map(|n| n.trim().parse().expect("--nodes 3,5,7,9"))
        .collect();
    let primes = fixture_primes();
    println!("cost curve, {BACKEND}, {} cores, n in {nodes:?}", cores());
    println!(
        "| phase | n | t | iterations | CPU ms/party | CPU ms max party | CPU ms caller \
         | wall ms | messages/party | bytes/party |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut rec = Recorder {
        points: Vec::new(),
        out,
    };
    let path: DerivationPath = "m/0/1".parse().expect("path");
    let msg = SighashPreimage::new(b"cost curve preimage".to_vec());
    for n in nodes {
        let phase = |name, t: Option<u16>, parties, on_caller| Phase {
            name,
            n,
            t,
            parties,
            on_caller,
        };
        let set = primes.primes[..usize::from(n)].to_vec();
        let aux = rec
            .measure(phase("aux info", None, n, false), 1, || {
                local::aux_info(set.clone()).expect("aux info")
            })
            .pop()
            .expect("aux info");
        for t in thresholds(n) {
            let signers = PartyIndex::all(t);
            let shares = rec
                .measure(phase("ECDSA keygen", Some(t), n, false), it(5), || {
                    local::ecdsa_keygen(t, &aux).expect("keygen")
                })
                .pop()
                .expect("shares");
            // One presignature is a minute of CPU at t = 8: one iteration past t = 3.
            let presigs = rec.measure(
                phase("ECDSA presignature", Some(t), t, false),
                it(if t <= 3 { 2 } else { 1 }),
                || local::presign(&shares, &signers, &path).expect("presign"),
            );
            let iterations = presigs.len();
            let mut presigs = presigs.into_iter();
            rec.measure(
                phase("ECDSA sign from presignature", Some(t), t, true),
                iterations,
                || {
                    let p = presigs.next().expect("one presignature per iteration");
                    local::sign_with_presignatures(&shares, p, &msg).expect("online sign")
                },
            );
            let frost = rec
                .measure(phase("FROST keygen", Some(t), n, false), it(5), || {
                    local::schnorr_keygen(t, n).expect("keygen")
                })
                .pop()
                .expect("shares");
            rec.measure(phase("FROST sign", Some(t), t, false), it(10), || {
                local::schnorr_sign(&frost, &signers, &path, &[7; 32]).expect("sign")
            });
        }
        // Redrawn after each n, so a stopped run still leaves a plot of what it has.
        plot::render(&rec.points, &rec.out.join("cost-curve.png")).expect("plot");
    }
    println!("written to {}", rec.out.display());
}
