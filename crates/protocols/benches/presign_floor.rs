//! The presignature floor (issue 22 item 2): the modular exponentiations one signer must do
//! for one CGGMP24 presignature (counted from the sources in `presign_floor/count.rs`), each
//! size's cost measured on this machine, multiplied and summed; then one presignature measured
//! in process for comparison, and what CRT or multi-exponentiation tables would save.
//!
//! `nice -n 10 cargo bench -p mpc-protocols --bench presign_floor [--features bench-rug-modpow] [-- --quick] [--tables]`
//!
//! With `--features bench-rug-modpow` GMP is compiled in beside num-bigint: cggmp24 still uses
//! num-bigint (fast-paillier picks it when both are on), and the unit costs are measured with
//! both.
//! `--tables` also times cggmp24's multi-exponentiation tables: one party's against plain
//! `s^x t^y`, then presignatures with tables for the signers' parameters (about 45 s of CPU
//! more). `--presign-only` runs only three presignatures (with tables if `--tables`), e.g.
//! under `perf record`. CPU time is read per thread (`CLOCK_THREAD_CPUTIME_ID`, through
//! `mpc_protocols::sim::thread_cpu`), so time spent waiting for a core is not counted; the
//! presignatures' from `/proc/self/stat` (all threads).

#[path = "presign_floor/count.rs"]
mod count;

use std::{hint::black_box, sync::Arc};

use cggmp24::{key_share::DirtyAuxInfo, PregeneratedPrimes};
use count::Modulus;
use generic_ec::{Point, Scalar};
use mpc_protocols::{ecdsa::Level, local, DerivationPath, PartyIndex};
use mpc_testkit::process_cpu_ms;
use paillier_zk::{
    backend::Integer,
    fast_paillier::{utils::CrtExp, DecryptionKey, EncryptionKey},
    multiexp::MultiexpTable,
};
use rand_core::OsRng;

type Curve = mpc_protocols::ecdsa::Curve;

/// This thread's CPU time in ns.
fn thread_cpu_ns() -> u64 {
    mpc_protocols::sim::thread_cpu().map_or(0, |d| d.as_nanos() as u64)
}

/// CPU µs per call of `f`, repeated until `budget_ns` of this thread's CPU (at least 3 calls).
fn per_call_us(budget_ns: u64, mut f: impl FnMut()) -> f64 {
    f();
    let start = thread_cpu_ns();
    let mut calls = 0u64;
    loop {
        f();
        calls += 1;
        let spent = thread_cpu_ns().saturating_sub(start);
        if spent >= budget_ns && calls >= 3 {
            return spent as f64 / calls as f64 / 1e3;
        }
    }
}

/// The moduli of the fixture's node set, as hex, so that both backends read the same numbers.
struct Moduli {
    other_nn: String,
    own_pp: String,
    plain_n: String,
    n_hat: String,
}

impl Moduli {
    fn hex(&self, m: Modulus) -> &str {
        match m {
            Modulus::OtherNn => &self.other_nn,
            Modulus::OwnPp => &self.own_pp,
            Modulus::PlainN => &self.plain_n,
            Modulus::NHat => &self.n_hat,
        }
    }
}

/// µs per modular exponentiation of each size in `count::sizes()`, with one backend's
/// `pow_mod_ref` (what fast-paillier and paillier-zk call).
macro_rules! modpow_costs {
    ($name:ident, $Int:ty) => {
        fn $name(moduli: &Moduli, budget_ns: u64) -> Vec<(Modulus, u32, f64)> {
            let mut rng = OsRng;
            count::sizes()
                .into_iter()
                .map(|(m, bits)| {
                    let modulus = <$Int>::from_str_radix(moduli.hex(m), 16).expect("hex modulus");
                    let base = modulus.random_below_ref(&mut rng);
                    let mut e = <$Int>::random_bits(bits, &mut rng);
                    e.set_bit(bits - 1, true);
                    let us = per_call_us(budget_ns, || {
                        black_box(base.pow_mod_ref(&e, &modulus));
                    });
                    (m, bits, us)
                })
                .collect()
        }
    };
}

modpow_costs!(modpow_costs_active, Integer);
#[cfg(feature = "bench-rug-modpow")]
modpow_costs!(
    modpow_costs_rug,
    paillier_zk::fast_paillier::backend::rug::Integer
);

fn cost(costs: &[(Modulus, u32, f64)], m: Modulus, bits: u32) -> f64 {
    costs
        .iter()
        .find(|(cm, cb, _)| *cm == m && *cb == bits)
        .map(|c| c.2)
        .unwrap_or(f64::NAN)
}

/// The floor per party in ms: every counted exponentiation times its measured cost.
fn floor_ms(costs: &[(Modulus, u32, f64)], m: u32) -> f64 {
    count::sizes()
        .into_iter()
        .map(|(md, bits)| f64::from(count::count(md, bits, m)) * cost(costs, md, bits))
        .sum::<f64>()
        / 1e3
}

#[derive(serde::Deserialize)]
struct AuxFixture {
    aux_info: Vec<DirtyAuxInfo<Level>>,
}

#[derive(serde::Deserialize)]
struct PrimesFixture {
    primes: Vec<PregeneratedPrimes<Level>>,
}

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = mpc_testkit::fixtures_dir().join(name);
    serde_json::from_slice(&std::fs::read(path).expect("fixture file")).expect("fixture parses")
}

/// A random signed integer of `bits` bits in magnitude (the top bit set).
fn signed(bits: u32) -> Integer {
    let mut x = Integer::random_bits(bits, &mut OsRng);
    x.set_bit(bits - 1, true);
    if rand_core::RngCore::next_u32(&mut OsRng) & 1 == 1 {
        -x
    } else {
        x
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let tables = args.iter().any(|a| a == "--tables");
    let presign_only = args.iter().any(|a| a == "--presign-only");
    let budget_ns = if quick { 100_000_000 } else { 400_000_000 };

    let aux: AuxFixture = fixture("aux-info-5.json");
    let primes: PrimesFixture = fixture("primes.json");
    let me = &aux.aux_info[0];
    let own_n = &me.N[0];
    let moduli = Moduli {
        other_nn: (&me.N[1] * &me.N[1]).to_str_radix(16),
        own_pp: (&me.p * &me.p).to_str_radix(16),
        plain_n: own_n.to_str_radix(16),
        n_hat: me.pedersen_params[0].hat_N.to_str_radix(16),
    };

    if presign_only {
        if tables {
            presignatures(&aux_with_tables(3), "with tables", &[3], 3, None);
        } else {
            presignatures(&mpc_testkit::aux_info(5), "as today", &[3], 3, None);
        }
        return;
    }
    print_count();

    println!("\n### Unit costs (CPU µs per modular exponentiation)\n");
    let active = modpow_costs_active(&moduli, budget_ns);
    #[cfg(feature = "bench-rug-modpow")]
    let rug = Some(modpow_costs_rug(&moduli, budget_ns));
    #[cfg(not(feature = "bench-rug-modpow"))]
    let rug: Option<Vec<(Modulus, u32, f64)>> = None;
    println!("| modulus | bits | exponent bits | num-bigint µs | rug µs |");
    println!("|---|---|---|---|---|");
    for (i, (m, bits, us)) in active.iter().enumerate() {
        let r = rug.as_ref().map(|r| format!("{:.0}", r[i].2));
        println!(
            "| {} | {} | {bits} | {us:.0} | {} |",
            m.label(),
            m.bits(),
            r.unwrap_or_else(|| "-".into())
        );
    }

    println!("\n### The floor (modular exponentiations only)\n");
    println!("| t | backend | per party ms | per presignature (t parties) ms |");
    println!("|---|---|---|---|");
    for t in [3u32, 4] {
        let f = floor_ms(&active, t - 1);
        println!("| {t} | num-bigint | {f:.0} | {:.0} |", f * f64::from(t));
        if let Some(r) = &rug {
            let f = floor_ms(r, t - 1);
            println!("| {t} | rug | {f:.0} | {:.0} |", f * f64::from(t));
        }
    }

    library_ops(me, budget_ns);
    crt_projection(me, &primes.primes[0], budget_ns);
    if tables {
        table_projection(me);
    }

    let ts: &[u16] = if quick { &[3] } else { &[3, 4] };
    let iterations = if quick { 1 } else { 3 };
    presignatures(
        &mpc_testkit::aux_info(5),
        "as today",
        ts,
        iterations,
        Some(&active),
    );
    if tables {
        let aux = aux_with_tables(3);
        // The floor above counts plain exponentiations, so no ratio here.
        presignatures(&aux, "with tables", &[3], iterations, None);
    }
}

/// The fixture's aux info of 5 with multi-exponentiation tables for the ring-Pedersen
/// parameters of parties `0..t` (the signer set), one table each, shared by every copy.
fn aux_with_tables(t: usize) -> Vec<mpc_protocols::ecdsa::AuxInfo> {
    let aux: AuxFixture = fixture("aux-info-5.json");
    let (xb, yb) = cggmp24::security_level::max_exponents_size::<Level>();
    let start = thread_cpu_ns();
    let tables: Vec<Arc<MultiexpTable>> = aux.aux_info[0].pedersen_params[..t]
        .iter()
        .map(|p| {
            Arc::new(MultiexpTable::build(&p.s, &p.t, xb, yb, p.hat_N.clone()).expect("table"))
        })
        .collect();
    println!(
        "\n{t} tables built in {:.1} s CPU",
        thread_cpu_ns().saturating_sub(start) as f64 / 1e9
    );
    aux.aux_info
        .into_iter()
        .map(|mut a| {
            for (params, table) in a.pedersen_params.iter_mut().zip(&tables) {
                params.multiexp = Some(Arc::clone(table));
            }
            serde_json::from_value(serde_json::to_value(&a).expect("serialize"))
                .expect("aux info with tables")
        })
        .collect()
}

/// Presignatures in process for each t in `ts` (t = 3: `iterations`, t = 4: one), CPU per
/// presignature of all parties, against the floor when `costs` are given.
fn presignatures(
    aux: &[mpc_protocols::ecdsa::AuxInfo],
    label: &str,
    ts: &[u16],
    iterations: u32,
    costs: Option<&[(Modulus, u32, f64)]>,
) {
    println!("\n### Presignatures in process, {label} (num-bigint, fixture aux info of 5)\n");
    println!(
        "| t | iterations | CPU ms per presignature (all parties) | floor ms | measured / floor |"
    );
    println!("|---|---|---|---|---|");
    let path: DerivationPath = "m/0/1".parse().expect("path");
    for &t in ts {
        let shares = local::ecdsa_keygen(t, aux).expect("keygen");
        let signers = PartyIndex::all(t);
        let iterations = if t == 3 { iterations } else { 1 };
        let cpu0 = process_cpu_ms();
        for _ in 0..iterations {
            black_box(local::presign(&shares, &signers, &path).expect("presign"));
        }
        let per = (process_cpu_ms() - cpu0) / f64::from(iterations);
        match costs {
            Some(costs) => {
                let floor = floor_ms(costs, u32::from(t) - 1) * f64::from(t);
                println!(
                    "| {t} | {iterations} | {per:.0} | {floor:.0} | {:.2} |",
                    per / floor
                );
            }
            None => println!("| {t} | {iterations} | {per:.0} | - | - |"),
        }
    }
}

/// The count, site by site, and by size for m = 2 (3 signers) and m = 3.
fn print_count() {
    println!("### Modular exponentiations per party per presignature (m = t - 1 others)\n");
    println!("| operation | source | modulus | exponent bits | count | m = 2 |");
    println!("|---|---|---|---|---|---|");
    for s in count::sites() {
        let formula = match (s.fixed, s.per_m) {
            (f, 0) => f.to_string(),
            (0, p) => format!("{p}m"),
            (f, p) => format!("{f} + {p}m"),
        };
        println!(
            "| {} | {} | {} ({}) | {} | {formula} | {} |",
            s.what,
            s.source,
            s.modulus.label(),
            s.modulus.bits(),
            s.exp_bits,
            s.count(2)
        );
    }
    println!("\n| modulus | exponent bits | count | m = 2 | m = 3 |");
    println!("|---|---|---|---|---|");
    for (m, bits) in count::sizes() {
        let (c0, c1) = (count::count(m, bits, 0), count::count(m, bits, 1));
        let formula = match (c0, c1 - c0) {
            (f, 0) => f.to_string(),
            (0, p) => format!("{p}m"),
            (f, p) => format!("{f} + {p}m"),
        };
        println!(
            "| {} ({}) | {bits} | {formula} | {} | {} |",
            m.label(),
            m.bits(),
            count::count(m, bits, 2),
            count::count(m, bits, 3)
        );
    }
}

/// The library calls as the protocol makes them (range and gcd checks, CRT recombination,
/// inversion for negative exponents included), and the other big-number and curve work.
fn library_ops(me: &DirtyAuxInfo<Level>, budget_ns: u64) {
    let mut rng = OsRng;
    let dec = DecryptionKey::from_primes(me.p.clone(), me.q.clone()).expect("own key");
    let other = EncryptionKey::from_n(me.N[1].clone());
    let own_ct = dec
        .encrypt_with(
            &signed(255),
            &Integer::sample_in_mult_group_of(&mut rng, dec.n()),
        )
        .expect("enc");
    let other_ct = other
        .encrypt_with(
            &signed(255),
            &Integer::sample_in_mult_group_of(&mut rng, other.n()),
        )
        .expect("enc");
    let plaintext = signed(1791);
    let own_nonce = Integer::sample_in_mult_group_of(&mut rng, dec.n());
    let other_nonce = Integer::sample_in_mult_group_of(&mut rng, other.n());
    let nn = other.nn().clone();
    let big_a = nn.random_below_ref(&mut rng);
    let big_b = nn.random_below_ref(&mut rng);
    let n_hat = &me.pedersen_params[0].hat_N;
    let mid_a = n_hat.random_below_ref(&mut rng);
    let mid_b = n_hat.random_below_ref(&mut rng);
    let (e256, e768) = (signed(255), signed(767));
    let scalar = Scalar::<Curve>::random(&mut rng);
    let point = Point::<Curve>::generator() * Scalar::<Curve>::random(&mut rng);
    macro_rules! timed {
        ($what:expr, $op:expr) => {
            (
                $what,
                per_call_us(budget_ns, || {
                    black_box($op);
                }),
            )
        };
    }
    #[rustfmt::skip]
    let rows = [
        timed!("own-key encryption (CRT, `DecryptionKey::encrypt_with`)", dec.encrypt_with(&plaintext, &own_nonce).expect("enc")),
        timed!("own-key decryption (CRT, `DecryptionKey::decrypt`)", dec.decrypt(&own_ct).expect("dec")),
        timed!("own-key omul, 256-bit signed scalar (CRT)", dec.omul(&e256, &own_ct).expect("omul")),
        timed!("own-key omul, 768-bit signed scalar (CRT)", dec.omul(&e768, &own_ct).expect("omul")),
        timed!("other's-key encryption (`EncryptionKey::encrypt_with`)", other.encrypt_with(&plaintext, &other_nonce).expect("enc")),
        timed!("other's-key omul, 256-bit signed scalar", other.omul(&e256, &other_ct).expect("omul")),
        timed!("other's-key omul, 768-bit signed scalar", other.omul(&e768, &other_ct).expect("omul")),
        timed!("gcd, 6144 bits (each `in_mult_group_of` mod N^2)", big_a.gcd_ref(&nn)),
        timed!("gcd, 3072 bits (mod N or N-hat)", mid_a.gcd_ref(n_hat)),
        timed!("inverse mod N^2, 6144 bits (negative exponents)", big_b.invert_ref(&nn)),
        timed!("inverse mod N-hat, 3072 bits", mid_b.invert_ref(n_hat)),
        timed!("multiply and reduce mod N^2, 6144 bits (`oadd`)", (&big_a * &big_b).modulo(&nn)),
        timed!("secp256k1: G * k (table)", Point::<Curve>::generator() * scalar),
        timed!("secp256k1: P * k (variable base)", point * scalar),
    ];
    println!("\n### Library operations as called (num-bigint, checks included)\n");
    println!("| operation | CPU µs |");
    println!("|---|---|");
    for (what, us) in rows {
        println!("| {what} | {us:.1} |");
    }
}

/// What CRT would save where the code does not use it: `s^x t^y` and `S^e` modulo one's own
/// N-hat when verifying (needs N-hat's primes, which aux info drops; `Aux::combine` would also
/// need to use `Aux::crt`, which today only `Aux::pow_mod` does), and `rho^e mod N_i`.
fn crt_projection(me: &DirtyAuxInfo<Level>, primes: &PregeneratedPrimes<Level>, budget_ns: u64) {
    let [p, q, hat_p, hat_q] = primes.primes_ref();
    let params = &me.pedersen_params[0];
    assert!(
        *p == me.p && *q == me.q,
        "primes.json[0] is aux-info-5.json[0]'s Paillier key"
    );
    assert!(
        hat_p * hat_q == params.hat_N,
        "primes.json[0] holds N-hat_0's primes"
    );
    let crt_hat = CrtExp::build_n(hat_p, hat_q).expect("crt");
    let crt_n = CrtExp::build_n(p, q).expect("crt");
    let n_hat = &params.hat_N;
    let crt_combine = |x: &Integer, y: &Integer| {
        let a = crt_hat
            .exp(&params.s, &crt_hat.prepare_exponent(x))
            .expect("exp");
        let b = crt_hat
            .exp(&params.t, &crt_hat.prepare_exponent(y))
            .expect("exp");
        (a * b).modulo(n_hat)
    };
    println!("\n### CRT where the code does not use it (num-bigint, µs per call)\n");
    println!(
        "| operation | count per party | today µs | with CRT µs | saved per party, m = 2, ms |"
    );
    println!("|---|---|---|---|---|");
    for (xb, yb, own, c) in count::combines(2) {
        if !own {
            continue;
        }
        let (x, y) = (signed(xb - 1), signed(yb - 1));
        let naive = per_call_us(budget_ns, || {
            black_box(n_hat.combine(&params.s, &x, &params.t, &y));
        });
        let crt = per_call_us(budget_ns, || {
            black_box(crt_combine(&x, &y));
        });
        println!(
            "| s^x t^y mod own N-hat, x {xb}, y {yb} bits | {c} | {naive:.0} | {crt:.0} | {:.0} |",
            f64::from(c) * (naive - crt) / 1e3
        );
    }
    let e = signed(255);
    let s_e = per_call_us(budget_ns, || {
        black_box(params.s.pow_mod_ref(&e, n_hat));
    });
    let s_e_crt = per_call_us(budget_ns, || {
        black_box(crt_hat.exp(&params.s, &crt_hat.prepare_exponent(&e)));
    });
    let c = 6 * 2; // the verifier's S^e (enc-elg, 2m) and S^e, T^e (aff-g, 4m)
    println!(
        "| S^e mod own N-hat, 256 bits | {c} | {s_e:.0} | {s_e_crt:.0} | {:.0} |",
        f64::from(c) * (s_e - s_e_crt) / 1e3
    );
    let n_e = per_call_us(budget_ns, || {
        black_box(params.s.pow_mod_ref(&e, &me.N[0]));
    });
    let n_e_crt = per_call_us(budget_ns, || {
        black_box(crt_n.exp(&params.s, &crt_n.prepare_exponent(&e)));
    });
    println!(
        "| rho^e mod own N_i, 256 bits | 4 | {n_e:.0} | {n_e_crt:.0} | {:.0} |",
        4.0 * (n_e - n_e_crt) / 1e3
    );
}

/// cggmp24's multi-exponentiation table for one party's ring-Pedersen parameters: its
/// build cost, size, and `s^x t^y` with it against without.
fn table_projection(me: &DirtyAuxInfo<Level>) {
    let params = &me.pedersen_params[0];
    let (xb, yb) = cggmp24::security_level::max_exponents_size::<Level>();
    let start = thread_cpu_ns();
    let table =
        MultiexpTable::build(&params.s, &params.t, xb, yb, params.hat_N.clone()).expect("table");
    let build_s = thread_cpu_ns().saturating_sub(start) as f64 / 1e9;
    println!(
        "\n### Multi-exponentiation table (num-bigint): one party's, {xb} x {yb} bits, built in {build_s:.1} s CPU, {} KiB\n",
        table.size_in_bytes() / 1024
    );
    println!("| s^x t^y, x bits, y bits | count per party, m = 2 | naive µs | table µs | saved per party ms |");
    println!("|---|---|---|---|---|");
    let mut seen = Vec::new();
    for (x_bits, y_bits, _, _) in count::combines(2) {
        if seen.contains(&(x_bits, y_bits)) {
            continue;
        }
        seen.push((x_bits, y_bits));
        let c: u32 = count::combines(2)
            .iter()
            .filter(|k| (k.0, k.1) == (x_bits, y_bits))
            .map(|k| k.3)
            .sum();
        let (x, y) = (signed(x_bits - 1), signed(y_bits - 1));
        let naive = per_call_us(300_000_000, || {
            black_box(params.hat_N.combine(&params.s, &x, &params.t, &y));
        });
        let with = per_call_us(300_000_000, || {
            black_box(table.prod_exp(&x, &y).expect("in range"));
        });
        println!(
            "| {x_bits}, {y_bits} | {c} | {naive:.0} | {with:.0} | {:.0} |",
            f64::from(c) * (naive - with) / 1e3
        );
    }
}
