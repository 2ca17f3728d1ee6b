//! A checkpointed stateful word count over a generated text, and what it must count:
//! the job the recovery and corruption tests run, stop, damage and restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value as Json;

/// The words the generated text is made of.
pub const WORDS: &[&str] = &[
    "river", "gate", "sluice", "flow", "batch", "state", "stream", "window", "record", "key",
    "value", "time", "water", "lock", "canal", "weir",
];

/// A small deterministic generator, so that a failing seed can be replayed.
pub struct Xorshift(pub u64);

impl Xorshift {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `lines` lines of 1 to 8 words each.
pub fn text(lines: usize, random: &mut Xorshift) -> String {
    (0..lines)
        .map(|_| {
            let words = 1 + random.next() % 8;
            (0..words)
                .map(|_| WORDS[(random.next() % WORDS.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A stateful word count over `input.txt`, a line per batch, its running totals written
/// to a JSON-lines file per batch.
pub fn stateful_word_count(dir: &Path, file: &str, udf_line: &str, step: &str) -> PathBuf {
    let source = "kind = \"file\"\npath = \"input.txt\"\nlines_per_batch = 1";
    stateful_word_count_of(dir, file, "20ms", udf_line, source, step)
}

/// A checkpointed stateful word count of the lines of `source` (the keys of its
/// `[[sources]]` table after the name), a batch every `interval`, its running totals
/// written to a JSON-lines file per batch.
pub fn stateful_word_count_of(
    dir: &Path,
    file: &str,
    interval: &str,
    udf_line: &str,
    source: &str,
    step: &str,
) -> PathBuf {
    let manifest = format!(
        r#"name = "wordcount"
batch_interval = "{interval}"
partitions = 2

[checkpoint]
dir = "checkpoint"
every = 5

[udfs]
wc = "{wordcount}"
{udf_line}

[[sources]]
name = "lines"
{source}

[[streams]]
name = "counts"
from = "lines"
steps = [
  {{ op = "flat_map", udf = "wc#tokenize" }},
  {{ op = "map", udf = "wc#with_one" }},
  {step},
]

[[sinks]]
from = "counts"
kind = "files"
prefix = "out/counts"
suffix = "jsonl"
format = "json_lines"
"#,
        wordcount = super::udf("wordcount").display(),
    );
    let path = dir.join(file);
    std::fs::write(&path, manifest).unwrap();
    path
}

/// The running-count step of [`stateful_word_count`].
pub const RUNNING_COUNT: &str = r#"{ op = "update_state_by_key", udf = "wc#running_count" }"#;

/// The counts in the newest output file of `dir`, and how many output files there are.
pub fn final_counts(dir: &Path) -> (BTreeMap<String, i64>, usize) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("out"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    files.sort();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for line in text.lines() {
            serde_json::from_str::<Json>(line)
                .unwrap_or_else(|e| panic!("{} holds a broken line {line:?}: {e}", file.display()));
        }
    }
    let newest = files.last().expect("the job wrote output files");
    let counts = std::fs::read_to_string(newest)
        .unwrap()
        .lines()
        .map(|line| {
            let pair: (String, i64) = serde_json::from_str(line).unwrap();
            pair
        })
        .collect();
    (counts, files.len())
}

/// What counting every word of `text` gives.
pub fn counted(text: &str) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for word in text.split_whitespace() {
        *counts.entry(word.to_owned()).or_insert(0) += 1;
    }
    counts
}

/// `sluice run MANIFEST --log text ARGS...`, to its end.
pub fn sluice_run(manifest: &Path, args: &[&str]) -> Output {
    super::sluice()
        .arg("run")
        .arg(manifest)
        .args(["--log", "text"])
        .args(args)
        .output()
        .unwrap()
}

/// The input of [`slow_word_count`]: 40 lines, one per batch, each taking 50 ms in
/// `faulty#linger`: batches are cut every 20 ms, faster than they are computed, so one is
/// always in flight and more wait in the log.
pub fn slow_input() -> String {
    let words = ["river", "gate", "sluice", "flow", "canal"];
    (0..40)
        .map(|i| format!("{} {}", words[i % 5], words[(i * 3 + 1) % 5]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A checkpointed stateful word count named `name` over [`slow_input`] (written to
/// `dir/input.txt`), slowed down by `faulty#linger`, its running totals written to a
/// JSON-lines file per batch in `dir/out`; its manifest is `dir/job.toml`.
pub fn slow_word_count(dir: &Path, name: &str) -> PathBuf {
    std::fs::write(dir.join("input.txt"), slow_input()).unwrap();
    let manifest = format!(
        r#"name = "{name}"
batch_interval = "20ms"
partitions = 1

[checkpoint]
dir = "checkpoint"
every = 100

[udfs]
wc = "{wordcount}"
faulty = "{faulty}"

[[sources]]
name = "lines"
kind = "file"
path = "input.txt"
lines_per_batch = 1

[[streams]]
name = "counts"
from = "lines"
steps = [
  {{ op = "map", udf = "faulty#linger" }},
  {{ op = "flat_map", udf = "wc#tokenize" }},
  {{ op = "map", udf = "wc#with_one" }},
  {{ op = "update_state_by_key", udf = "wc#running_count" }},
]

[[sinks]]
from = "counts"
kind = "files"
prefix = "out/counts"
suffix = "jsonl"
format = "json_lines"
"#,
        wordcount = super::udf("wordcount").display(),
        faulty = super::udf("faulty").display(),
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, manifest).unwrap();
    path
}
