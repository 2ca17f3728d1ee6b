//! The cost of one slide of reduceByKeyAndWindow, with and without an inverse function,
//! for a window of 10 and of 100 batches, in one run. With an inverse a slide touches
//! only the batch that entered and the one that left, so its cost should not grow with
//! the window; recomputed, it folds every batch of the window.
//!
//! Run with `cargo bench -p sluice --bench windows` after `scripts/setup`.

mod common;

use std::time::{Duration, Instant};

use sluice::job::Job;
use sluice::runtime::{Runtime, RuntimeConfig};
use sluice_abi::Batch;

const PAIRS_PER_BATCH: usize = 200_000;
const KEYS: usize = 20_000;
const TIMED_SLIDES: u64 = 10;

fn manifest(window: u64, inverse: bool) -> String {
    let component = common::wordcount();
    let inverse = if inverse {
        r#", inverse = "wc#subtract""#
    } else {
        ""
    };
    format!(
        "name = \"bench\"\nbatch_interval = \"1s\"\n[checkpoint]\ndir = \"not-opened-by-this-bench\"\n[udfs]\nwc = \"{}\"\n[[sources]]\nname = \"pairs\"\nkind = \"queue\"\nbatches = []\n[[streams]]\nname = \"out\"\nfrom = \"pairs\"\nsteps = [{{ op = \"reduce_by_key_and_window\", udf = \"wc#sum\"{inverse}, window = \"{window}s\" }}, {{ op = \"count\" }}]\n[[sinks]]\nfrom = \"out\"\nkind = \"collect\"\n",
        component.display()
    )
}

/// A batch of `(word, 1)` pairs over `KEYS` distinct words.
fn batch(seed: usize) -> Batch {
    let mut pairs = Batch::with_capacity(PAIRS_PER_BATCH, PAIRS_PER_BATCH * 16);
    for i in 0..PAIRS_PER_BATCH {
        let key = format!("w{}", (i * 7919 + seed * 104_729) % KEYS);
        pairs.push(&(key, 1i64)).unwrap();
    }
    pairs
}

/// Fills the window, then returns the mean time of one slide over the next slides.
fn per_slide(runtime: &Runtime, window: u64, inverse: bool) -> Duration {
    let config = sluice::manifest::parse(
        &manifest(window, inverse),
        std::path::Path::new("bench.toml"),
        runtime,
    )
    .unwrap();
    let job = Job::build(config, runtime).unwrap();
    let inputs: Vec<Batch> = (0..8).map(batch).collect();
    let mut number = 0usize;
    let mut next = || {
        number += 1;
        job.process(
            number as i64 * 1000,
            vec![inputs[number % inputs.len()].clone()],
        )
        .unwrap();
    };
    (0..window).for_each(|_| next());
    let started = Instant::now();
    (0..TIMED_SLIDES).for_each(|_| next());
    started.elapsed() / TIMED_SLIDES as u32
}

fn main() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    for (name, inverse) in [("with inverse", true), ("recomputed", false)] {
        let (short, long) = (
            per_slide(&runtime, 10, inverse),
            per_slide(&runtime, 100, inverse),
        );
        println!(
            "bench reduce_by_key_and_window {name}: window 10 batches {:.1} ms/slide, window 100 batches {:.1} ms/slide, ratio {:.2}",
            short.as_secs_f64() * 1e3,
            long.as_secs_f64() * 1e3,
            long.as_secs_f64() / short.as_secs_f64()
        );
    }
}
