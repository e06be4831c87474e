//! What the table benchmarks share: the generated links, so `bench-table`
//! and `bench-segments` measure the same table, and a thread's CPU clock.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use shortline_store::{Code, LinkId, LinkRecord, Target};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const SPACE_7: u64 = 3_521_614_606_208; // 62^7

/// A 7-character base62 code, distinct for distinct `i` below 62^7, scattered
/// by multiplying with a constant coprime to 62^7.
#[must_use]
pub fn code_for(i: u64) -> String {
    let mut n = (u128::from(i) * 2_654_435_761 % u128::from(SPACE_7)) as u64;
    let mut out = [0u8; 7];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("ascii")
}

/// Link `i`'s target: about 75 bytes, or about 25 with `short`.
#[must_use]
pub fn target_for(i: u64, short: bool) -> String {
    if short {
        format!("https://e.example/{i}")
    } else {
        format!("https://www.example.com/articles/2026/{i}/a-readable-slug?utm_source=bench")
    }
}

/// Link `i` of a generated table.
#[must_use]
pub fn record_for(i: u64, short: bool) -> LinkRecord {
    LinkRecord::new(
        Code::parse(&code_for(i)).expect("valid code"),
        Target::parse(&target_for(i, short)).expect("valid target"),
        LinkId(i),
    )
}

/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`).
#[must_use]
pub fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; the clock id is a
    // constant every Linux supports.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut now) };
    assert_eq!(status, 0, "the thread CPU clock is always readable");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// One lookup workload: its name and the codes it asks for.
#[derive(Debug)]
pub struct Workload {
    pub name: &'static str,
    pub probes: Vec<Vec<u8>>,
}

/// Uniform hits, Zipf hits (ranks shuffled over the table) and misses over
/// a table of links `0..n`.
pub fn workloads(n: u64, lookups: usize, zipf_exponent: f64) -> Result<Vec<Workload>> {
    let mut rng = StdRng::seed_from_u64(42);
    let uniform = (0..lookups)
        .map(|_| code_for(rng.random_range(0..n)).into_bytes())
        .collect();
    let zipf = Zipf::new(n as f64, zipf_exponent).context("zipf parameters")?;
    // Zipf ranks are shuffled onto codes so the hot set is not one region of the file.
    let hot = (0..lookups)
        .map(|_| {
            let rank = zipf.sample(&mut rng) as u64 - 1;
            code_for(rank.wrapping_mul(0x9E37_79B9_7F4A_7C15) % n).into_bytes()
        })
        .collect();
    let misses = (0..lookups)
        .map(|_| {
            let mut code = code_for(rng.random_range(0..n)).into_bytes();
            code.push(b'x');
            code
        })
        .collect();
    Ok(vec![
        Workload {
            name: "uniform hits",
            probes: uniform,
        },
        Workload {
            name: "zipf hits",
            probes: hot,
        },
        Workload {
            name: "misses",
            probes: misses,
        },
    ])
}

/// Wall time of one lookup per probe.
pub fn time_lookups(probes: &[Vec<u8>], mut lookup: impl FnMut(&[u8]) -> usize) -> Duration {
    let start = Instant::now();
    let mut sum = 0usize;
    for probe in probes {
        sum = sum.wrapping_add(lookup(black_box(probe.as_slice())));
    }
    black_box(sum);
    start.elapsed()
}
