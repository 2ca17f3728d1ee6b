//! Spark 3.5.9's Scala DStream word count (host/benches/spark/wordcount.scala), run by
//! `scripts/spark wordcount` on the same text, split into one file per batch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::process::{self, Watch};
use crate::{Measured, Sizes};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/spark")
}

/// Installs Spark if it is not yet (a download of 318 MB the first time), before any run
/// is timed.
pub fn install() {
    process::run(Command::new(script()).arg("--install-only"), Watch::Stdout);
}

/// Writes `text` into `dir` as one file per batch of `sizes.lines_per_batch` lines.
pub fn write_batches(dir: &Path, text: &str, sizes: &Sizes) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rest = text;
    for batch in 0..sizes.batches {
        let end = rest
            .match_indices('\n')
            .nth(sizes.lines_per_batch - 1)
            .map_or(rest.len(), |(at, _)| at + 1);
        std::fs::write(dir.join(format!("batch-{batch:05}.txt")), &rest[..end]).unwrap();
        rest = &rest[end..];
    }
    assert!(rest.is_empty(), "{} batches hold every line", sizes.batches);
}

/// Runs the word count over the batch files in `input`, writing into `output`; returns
/// its steady rate and peak memory, and the counts it wrote.
pub fn count(input: &Path, output: &Path, sizes: &Sizes) -> (Measured, HashMap<String, u64>) {
    let _ = std::fs::remove_dir_all(output);
    let finished = process::run(
        Command::new(script())
            .arg("wordcount")
            .arg(input)
            .arg(output),
        Watch::Stdout,
    );
    // `sluice-spark batch N ended_ms T`: when the StreamingListener heard batch N end.
    let ends: Vec<f64> = finished
        .lines
        .iter()
        .filter_map(|(_, line)| {
            let report = line.split("sluice-spark batch ").nth(1)?;
            let ended_ms: f64 = report.split(" ended_ms ").nth(1)?.trim().parse().ok()?;
            Some(ended_ms / 1000.0)
        })
        .collect();
    let mut counts = HashMap::new();
    for batch in std::fs::read_dir(output).unwrap() {
        for part in std::fs::read_dir(batch.unwrap().path()).unwrap() {
            let part = part.unwrap();
            // Not Hadoop's _SUCCESS and checksum files.
            if !part.file_name().to_string_lossy().starts_with("part-") {
                continue;
            }
            for line in std::fs::read_to_string(part.path()).unwrap().lines() {
                let (word, count) = line.split_once('\t').expect("word<TAB>count");
                *counts.entry(word.to_owned()).or_insert(0) += count.parse::<u64>().unwrap();
            }
        }
    }
    let measured = Measured {
        rate: crate::steady_rate(&ends, sizes),
        peak_rss: Some(finished.peak_rss),
    };
    (measured, counts)
}
