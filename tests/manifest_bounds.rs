//! Manifests are bounded at check time: every number, size and duration out of its range
//! is refused by `sluice check` with the key, the value and the range; a job at every
//! upper bound runs in bounded memory; and no mutation of a valid manifest makes the
//! parser or the checker panic.

mod common;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sluice::runtime::{Runtime, RuntimeConfig};

use common::sluice;

const GIB: u64 = 1 << 30;

/// A valid job with every bounded key present: the rows of the table below change one.
fn base_manifest() -> String {
    format!(
        r#"name = "bounds"
batch_interval = "1s"
partitions = 3
max_queued_batches = 100

[udfs]
wc = "{wordcount}"
conf = "{conformance}"

[limits]
memory = "64MiB"
call_timeout = "10s"
output = "64KiB"
transfer = "128MiB"

[checkpoint]
dir = "checkpoints"
every = 10

[[sources]]
name = "lines"
kind = "file"
path = "input.txt"
lines_per_batch = 100

[[sources]]
name = "numbers"
kind = "generator"
rate = 1000
limit = 5000

[[sources]]
name = "typed"
kind = "socket"
port = 9999

[[streams]]
name = "counts"
from = "lines"
steps = [
  {{ op = "flat_map", udf = "wc#tokenize" }},
  {{ op = "map", udf = "wc#with_one" }},
  {{ op = "repartition", partitions = 5 }},
  {{ op = "map_with_state", udf = "wc#count_each", timeout = "1m", timeout_check_every = 5 }},
]

[[streams]]
name = "windowed"
from = "numbers"
steps = [
  {{ op = "map", udf = "conf#add_10" }},
  {{ op = "count_by_window", window = "10s", slide = "2s" }},
]

[[sinks]]
from = "counts"
kind = "print"
num = 10

[[sinks]]
from = "windowed"
kind = "print"
"#,
        wordcount = common::udf("wordcount").display(),
        conformance = common::udf("conformance").display(),
    )
}

/// Writes `manifest` as `dir/job.toml`, next to the input file it reads.
fn write_job(dir: &Path, manifest: &str) -> PathBuf {
    std::fs::write(
        dir.join("input.txt"),
        "the quick brown fox\njumps over the lazy dog\n",
    )
    .unwrap();
    let path = dir.join("job.toml");
    std::fs::write(&path, manifest).unwrap();
    path
}

/// `sluice check`'s exit code and everything it printed.
fn check(job: &Path) -> (Option<i32>, String) {
    let output = sluice().arg("check").arg(job).output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

#[test]
fn out_of_range_values_are_refused_by_check_with_key_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_manifest();
    let (code, output) = check(&write_job(dir.path(), &base));
    assert_eq!(code, Some(0), "the base manifest is valid: {output}");

    // A component that is not a regular file, or is too large, is refused without
    // reading it (a sparse file costs no disk).
    let huge = dir.path().join("huge.wasm");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(256 * (1 << 20) + 1)
        .unwrap();
    let huge = huge.display().to_string();

    let interval = "from 10ms to 24h";
    let partitions = "from 1 to 1024";
    // (text in the base manifest, its replacement, the key, the range).
    let rows: Vec<(&str, String, &str, &str)> = vec![
        (
            "batch_interval = \"1s\"",
            "batch_interval = \"9ms\"".into(),
            "`batch_interval`",
            interval,
        ),
        (
            "batch_interval = \"1s\"",
            "batch_interval = \"24h 1ms\"".into(),
            "`batch_interval`",
            interval,
        ),
        (
            "batch_interval = \"1s\"",
            "batch_interval = \"584942417 years\"".into(),
            "`batch_interval`",
            interval,
        ),
        (
            "batch_interval = \"1s\"",
            "batch_interval = \"9223372036854775808ms\"".into(),
            "`batch_interval`",
            interval,
        ),
        (
            "batch_interval = \"1s\"",
            "batch_interval = \"18446744073709551616ms\"".into(),
            "`batch_interval`",
            interval,
        ),
        (
            "partitions = 3",
            "partitions = 0".into(),
            "`partitions`",
            partitions,
        ),
        (
            "partitions = 3",
            "partitions = 1025".into(),
            "`partitions`",
            partitions,
        ),
        (
            "partitions = 3",
            format!("partitions = {}", i64::MAX),
            "`partitions`",
            partitions,
        ),
        (
            "partitions = 5",
            "partitions = -1".into(),
            "`partitions`",
            partitions,
        ),
        (
            "partitions = 5",
            "partitions = 1000000000".into(),
            "`partitions`",
            partitions,
        ),
        (
            "memory = \"64MiB\"",
            "memory = \"0B\"".into(),
            "`limits.memory`",
            "from 1MiB to 4GiB",
        ),
        (
            "memory = \"64MiB\"",
            "memory = \"4097MiB\"".into(),
            "`limits.memory`",
            "from 1MiB to 4GiB",
        ),
        (
            "call_timeout = \"10s\"",
            "call_timeout = \"9ms\"".into(),
            "`limits.call_timeout`",
            "from 10ms to 1h",
        ),
        (
            "call_timeout = \"10s\"",
            "call_timeout = \"61m\"".into(),
            "`limits.call_timeout`",
            "from 10ms to 1h",
        ),
        (
            "output = \"64KiB\"",
            "output = \"1023B\"".into(),
            "`limits.output`",
            "from 1KiB to 64MiB",
        ),
        (
            "output = \"64KiB\"",
            "output = \"65MiB\"".into(),
            "`limits.output`",
            "from 1KiB to 64MiB",
        ),
        (
            "transfer = \"128MiB\"",
            "transfer = \"1023KiB\"".into(),
            "`limits.transfer`",
            "from 1MiB to 1GiB",
        ),
        (
            "transfer = \"128MiB\"",
            "transfer = \"1025MiB\"".into(),
            "`limits.transfer`",
            "from 1MiB to 1GiB",
        ),
        (
            "every = 10",
            "every = 0".into(),
            "`checkpoint.every`",
            "from 1 to 10_000",
        ),
        (
            "max_queued_batches = 100",
            "max_queued_batches = 0".into(),
            "`max_queued_batches`",
            "from 1 to 10_000",
        ),
        (
            "max_queued_batches = 100",
            "max_queued_batches = 10001".into(),
            "`max_queued_batches`",
            "from 1 to 10_000",
        ),
        (
            "timeout_check_every = 5",
            "timeout_check_every = 0".into(),
            "`timeout_check_every`",
            "from 1 to 10_000",
        ),
        (
            "timeout_check_every = 5",
            "timeout_check_every = 10001".into(),
            "`timeout_check_every`",
            "from 1 to 10_000",
        ),
        (
            "every = 10",
            "every = 10001".into(),
            "`checkpoint.every`",
            "from 1 to 10_000",
        ),
        (
            "lines_per_batch = 100",
            "lines_per_batch = 0".into(),
            "`lines_per_batch`",
            "from 1 to 10_000_000",
        ),
        (
            "lines_per_batch = 100",
            "lines_per_batch = 10000001".into(),
            "`lines_per_batch`",
            "from 1 to 10_000_000",
        ),
        (
            "rate = 1000",
            "rate = 0".into(),
            "`rate`",
            "from 1 to 10_000_000",
        ),
        (
            "rate = 1000",
            "rate = 10000001".into(),
            "`rate`",
            "from 1 to 10_000_000",
        ),
        (
            "rate = 1000",
            "rate = 1000000000000".into(),
            "`rate`",
            "from 1 to 10_000_000",
        ),
        (
            "limit = 5000",
            "limit = 0".into(),
            "`limit`",
            "from 1 to 9_223_372_036_854_775_807",
        ),
        (
            "limit = 5000",
            "limit = -5".into(),
            "`limit`",
            "from 1 to 9_223_372_036_854_775_807",
        ),
        (
            "port = 9999",
            "port = 0".into(),
            "`port`",
            "from 1 to 65_535",
        ),
        (
            "port = 9999",
            "port = 65536".into(),
            "`port`",
            "from 1 to 65_535",
        ),
        (
            "window = \"10s\"",
            "window = \"0s\"".into(),
            "`window`",
            "from 1 to 10_000 batch intervals",
        ),
        (
            "window = \"10s\"",
            "window = \"10001s\"".into(),
            "`window`",
            "from 1 to 10_000 batch intervals",
        ),
        (
            "window = \"10s\"",
            "window = \"584942417 years\"".into(),
            "`window`",
            "from 1 to 10_000 batch intervals",
        ),
        (
            "slide = \"2s\"",
            "slide = \"0s\"".into(),
            "`slide`",
            "from 1 to 10_000 batch intervals",
        ),
        (
            "slide = \"2s\"",
            "slide = \"10001s\"".into(),
            "`slide`",
            "from 1 to 10_000 batch intervals",
        ),
        (
            "timeout = \"1m\"",
            "timeout = \"9ms\"".into(),
            "`timeout`",
            "from 10ms to 366d",
        ),
        (
            "timeout = \"1m\"",
            "timeout = \"367d\"".into(),
            "`timeout`",
            "from 10ms to 366d",
        ),
        ("num = 10", "num = 0".into(), "`num`", "from 1 to 1_000_000"),
        (
            "num = 10",
            "num = 1000001".into(),
            "`num`",
            "from 1 to 1_000_000",
        ),
        (
            "wc = \"",
            "wc = \"/dev/zero\" # \"".into(),
            "/dev/zero",
            "not a regular file",
        ),
        (
            "wc = \"",
            format!("wc = \"{huge}\" # \""),
            "huge.wasm",
            "larger than 256 MiB",
        ),
    ];
    for (from, to, key, range) in rows {
        assert_eq!(
            base.matches(from).count(),
            1,
            "`{from}` is in the base once"
        );
        let manifest = base.replacen(from, &to, 1);
        let line = manifest[..manifest.find(&to).unwrap()]
            .matches('\n')
            .count()
            + 1;
        let started = Instant::now();
        let (code, output) = check(&write_job(dir.path(), &manifest));
        assert_eq!(code, Some(2), "`{to}` is refused: {output}");
        for expected in [key, range, &format!("job.toml:{line}:"), "help:"] {
            assert!(
                output.contains(expected),
                "`{to}`: expected `{expected}` in: {output}"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "`{to}` took {:?} to check",
            started.elapsed()
        );
    }
}

#[test]
fn a_manifest_that_is_not_a_small_regular_file_is_not_read() {
    let (code, output) = check(Path::new("/dev/zero"));
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("not a regular file"), "{output}");

    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("job.toml");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(16 * (1 << 20) + 1)
        .unwrap();
    let (code, output) = check(&big);
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("larger than 16 MiB"), "{output}");
}

/// The peak resident memory of the largest child process this test binary waited for.
fn children_peak_rss() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        assert_eq!(libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage), 0);
        usage
    };
    usage.ru_maxrss as u64 * 1024
}

/// The peak resident memory of this process.
fn own_peak_rss() -> u64 {
    // SAFETY: as above.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    usage.ru_maxrss as u64 * 1024
}

#[test]
fn a_job_at_every_upper_bound_runs_two_batches_under_3_gib() {
    let dir = tempfile::tempdir().unwrap();
    // Every key at the top of its range but the interval: two batches of 24 h would take
    // two days (the table above checks that 24 h passes and a millisecond more does not).
    // At 10 s, the generator's 10 M records/s would make 100 M records a batch (8.9 GB at
    // the peak, before its buffer was bounded); its cap holds a batch to 10 M.
    let manifest = format!(
        r#"name = "upper-bounds"
tenant = "bulk"
batch_interval = "10s"
partitions = 1024
max_queued_batches = 10000

[udfs]
wc = "{wordcount}"
conf = "{conformance}"

[limits]
memory = "4GiB"
call_timeout = "1h"
output = "64MiB"
transfer = "1GiB"

[checkpoint]
dir = "checkpoints"
every = 10000

[[sources]]
name = "lines"
kind = "file"
path = "input.txt"
lines_per_batch = 10000000

[[sources]]
name = "numbers"
kind = "generator"
rate = 10000000
limit = 9223372036854775807

[[streams]]
name = "counts"
from = "lines"
steps = [
  {{ op = "flat_map", udf = "wc#tokenize" }},
  {{ op = "map", udf = "wc#with_one" }},
  {{ op = "repartition", partitions = 1024 }},
  {{ op = "map_with_state", udf = "wc#count_each", timeout = "366d", timeout_check_every = 10000 }},
]

[[streams]]
name = "plus10"
from = "numbers"
steps = [{{ op = "map", udf = "conf#add_10" }}]

[[streams]]
name = "window"
from = "plus10"
steps = [{{ op = "window", window = "100000s", slide = "10s" }}, {{ op = "count" }}]

[[streams]]
name = "slow"
from = "numbers"
steps = [{{ op = "count_by_window", window = "100000s", slide = "100000s" }}]

[[sinks]]
from = "counts"
kind = "print"
num = 1000000

[[sinks]]
from = "plus10"
kind = "print"
num = 1000000

[[sinks]]
from = "window"
kind = "print"

[[sinks]]
from = "slow"
kind = "print"
"#,
        wordcount = common::udf("wordcount").display(),
        conformance = common::udf("conformance").display(),
    );
    let longest = manifest
        .replace("batch_interval = \"10s\"", "batch_interval = \"24h\"")
        .replace("\"100000s\"", "\"10000d\"")
        .replace("slide = \"10s\"", "slide = \"1d\"");
    let (code, output) = check(&write_job(dir.path(), &longest));
    assert_eq!(
        code,
        Some(0),
        "the longest interval and windows pass: {output}"
    );
    let job = write_job(dir.path(), &manifest);
    let (code, output) = check(&job);
    assert_eq!(code, Some(0), "the upper bounds are accepted: {output}");

    let stdout = std::fs::File::create(dir.path().join("stdout")).unwrap();
    let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
    let started = Instant::now();
    // The default tenant's quotas hold a batch to 1 M records: this job's tenant may take
    // what the generator's upper bound brings.
    let host_config = dir.path().join("host.toml");
    std::fs::write(
        &host_config,
        "[[tenants]]\nname = \"bulk\"\nmax_batch_records = 100_000_000\nmax_call_output_records = 100_000_000\nmax_call_output_bytes = \"4GiB\"\n",
    )
    .unwrap();
    let status = sluice()
        .args(["run", job.to_str().unwrap(), "--batches", "2"])
        .arg("--host-config")
        .arg(&host_config)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .status()
        .unwrap();
    let elapsed = started.elapsed();
    let peak = children_peak_rss();
    let printed = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
    let log = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    eprintln!(
        "upper bounds: 2 batches in {elapsed:?}, peak memory {} MiB",
        peak >> 20
    );
    assert!(status.success(), "the run failed: {log}");
    // Three sinks printed both batches (the fourth's window slides past them), and the
    // generator's records went through the map.
    assert_eq!(printed.matches("Time: ").count(), 2 * 3, "{log}");
    assert!(
        printed.contains("\n10\n"),
        "plus10 printed the generator's records"
    );
    assert!(peak < 3 * GIB, "peak memory {} MiB", peak >> 20);
}

/// Valid manifests to mutate: the examples, and the base manifest of the table above.
fn seeds(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut seeds: Vec<(PathBuf, String)> = std::fs::read_dir(common::root().join("examples"))
        .unwrap()
        .map(|entry| entry.unwrap().path().join("job.toml"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path, text)
        })
        .collect();
    seeds.sort();
    let base = base_manifest();
    seeds.push((write_job(dir, &base), base));
    seeds
}

/// Values a mutation puts in place of another: each type TOML has, values at and past
/// every range, and paths that must never be read.
fn leaf_value() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        integer_value(),
        prop::sample::select(vec![0.0, -0.0, 1e9, 1e300, f64::NAN, f64::INFINITY, 0.5])
            .prop_map(toml::Value::Float),
        any::<bool>().prop_map(toml::Value::Boolean),
        string_value(),
    ]
}

/// Integers at and past the ends of every range, and any other.
fn integer_value() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        prop::sample::select(vec![
            0,
            1,
            -1,
            9,
            10,
            1024,
            1025,
            65_535,
            65_536,
            10_000,
            10_001,
            10_000_000,
            10_000_001,
            1 << 32,
            i64::MAX,
            i64::MIN,
        ])
        .prop_map(toml::Value::Integer),
        any::<i64>().prop_map(toml::Value::Integer),
    ]
}

/// Durations, sizes, paths and names at and past every range, and any other text.
fn string_value() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "0s",
            "9ms",
            "10ms",
            "24h",
            "24h 1ms",
            "1ns",
            "10500us",
            "366d",
            "367d",
            "584942417 years",
            "9223372036854775808ms",
            "18446744073709551616ms",
            "1e9s",
            "0B",
            "1023B",
            "1MiB",
            "4GiB",
            "4097MiB",
            "99999999999999999999GiB",
            "1.5.5MiB",
            "/dev/zero",
            "/dev/stdin",
            "/tmp",
            ".",
            "..",
            "input.txt",
            "wc#tokenize",
            "wc#nothing",
            "/dev/zero#map",
            "lines",
            "counts",
            "numbers",
            "batch",
            "csv",
            "window",
            "map_with_state",
            "reduce_by_key_and_window",
            "generator",
            "queue",
        ])
        .prop_map(|text| toml::Value::String(text.to_owned())),
        "[ -~]{0,12}".prop_map(toml::Value::String),
    ]
}

/// A leaf value, or arrays and tables of them.
fn any_value() -> impl Strategy<Value = toml::Value> {
    leaf_value().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|map| toml::Value::Table(map.into_iter().collect())),
        ]
    })
}

/// One change to a manifest, at the node `at` picks among all of its nodes.
#[derive(Debug, Clone)]
enum Mutation {
    /// An integer or a string replaced by another of its type (the first or the second
    /// value), which is what reaches the range checks past the parser.
    Tweak(prop::sample::Index, toml::Value, toml::Value),
    /// The node's value replaced.
    Set(prop::sample::Index, toml::Value),
    /// The node removed.
    Remove(prop::sample::Index),
    /// The node's key renamed (within its table).
    Rename(prop::sample::Index, String),
    /// A key added to the table at or above the node.
    Insert(prop::sample::Index, String, toml::Value),
    /// A byte of the manifest's text replaced, after the other mutations.
    Byte(prop::sample::Index, u8),
}

const KEYS: &[&str] = &[
    "name",
    "batch_interval",
    "partitions",
    "udfs",
    "limits",
    "memory",
    "call_timeout",
    "output",
    "checkpoint",
    "dir",
    "every",
    "fsync",
    "sources",
    "kind",
    "host",
    "port",
    "path",
    "lines_per_batch",
    "rate",
    "limit",
    "batches",
    "format",
    "streams",
    "from",
    "steps",
    "op",
    "udf",
    "with",
    "other",
    "batch_op",
    "window",
    "slide",
    "inverse",
    "filter",
    "create",
    "merge_value",
    "merge_combiners",
    "initial_state",
    "timeout",
    "sinks",
    "num",
    "prefix",
    "suffix",
];

fn any_key() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => "[a-z_]{1,10}",
    ]
}

fn any_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        8 => (any::<prop::sample::Index>(), integer_value(), string_value())
            .prop_map(|(at, integer, string)| Mutation::Tweak(at, integer, string)),
        4 => (any::<prop::sample::Index>(), leaf_value()).prop_map(|(at, value)| Mutation::Set(at, value)),
        1 => (any::<prop::sample::Index>(), any_value()).prop_map(|(at, value)| Mutation::Set(at, value)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Remove),
        1 => (any::<prop::sample::Index>(), any_key()).prop_map(|(at, key)| Mutation::Rename(at, key)),
        2 => (any::<prop::sample::Index>(), any_key(), leaf_value())
            .prop_map(|(at, key, value)| Mutation::Insert(at, key, value)),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Byte(at, byte)),
    ]
}

/// A step on the way from the document's root to one of its nodes.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Item(usize),
}

/// Every node's path, the root's (empty) first, and whether it is an integer or a string.
fn paths(value: &toml::Value, at: Vec<Step>, out: &mut Vec<(Vec<Step>, bool)>) {
    let tweakable = matches!(value, toml::Value::Integer(_) | toml::Value::String(_));
    out.push((at.clone(), tweakable));
    let children: Vec<(Step, &toml::Value)> = match value {
        toml::Value::Table(table) => table
            .iter()
            .map(|(k, v)| (Step::Key(k.clone()), v))
            .collect(),
        toml::Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (Step::Item(i), v))
            .collect(),
        _ => Vec::new(),
    };
    for (step, child) in children {
        let mut path = at.clone();
        path.push(step);
        paths(child, path, out);
    }
}

fn node<'v>(mut value: &'v mut toml::Value, path: &[Step]) -> &'v mut toml::Value {
    for step in path {
        value = match (step, value) {
            (Step::Key(key), toml::Value::Table(table)) => table.get_mut(key).unwrap(),
            (Step::Item(index), toml::Value::Array(items)) => &mut items[*index],
            _ => unreachable!("paths lead to nodes"),
        };
    }
    value
}

/// `seed` with `mutations` applied, as text.
fn mutate(seed: &str, mutations: &[Mutation]) -> String {
    let mut document = toml::Value::Table(seed.parse::<toml::Table>().expect("seeds are TOML"));
    let mut bytes = Vec::new();
    for mutation in mutations {
        let mut all = Vec::new();
        paths(&document, Vec::new(), &mut all);
        let pick = |at: &prop::sample::Index| all[at.index(all.len())].0.clone();
        match mutation {
            Mutation::Tweak(at, integer, string) => {
                let leaves: Vec<&Vec<Step>> = all
                    .iter()
                    .filter(|(_, tweakable)| *tweakable)
                    .map(|(path, _)| path)
                    .collect();
                if leaves.is_empty() {
                    continue;
                }
                let path = leaves[at.index(leaves.len())].clone();
                let leaf = node(&mut document, &path);
                *leaf = match leaf {
                    toml::Value::Integer(_) => integer.clone(),
                    _ => string.clone(),
                };
            }
            Mutation::Set(at, value) => {
                let path = pick(at);
                if !path.is_empty() {
                    *node(&mut document, &path) = value.clone();
                }
            }
            Mutation::Remove(at) | Mutation::Rename(at, _) => {
                let mut path = pick(at);
                let Some(last) = path.pop() else { continue };
                let parent = node(&mut document, &path);
                let removed = match (parent, last) {
                    (toml::Value::Table(table), Step::Key(key)) => table.remove(&key),
                    (toml::Value::Array(items), Step::Item(index)) => Some(items.remove(index)),
                    _ => None,
                };
                if let (Mutation::Rename(_, key), Some(value)) = (mutation, removed)
                    && let toml::Value::Table(table) = node(&mut document, &path)
                {
                    table.insert(key.clone(), value);
                }
            }
            Mutation::Insert(at, key, value) => {
                let mut path = pick(at);
                while !matches!(node(&mut document, &path), toml::Value::Table(_)) {
                    path.pop();
                }
                if let toml::Value::Table(table) = node(&mut document, &path) {
                    table.insert(key.clone(), value.clone());
                }
            }
            Mutation::Byte(at, byte) => bytes.push((*at, *byte)),
        }
    }
    let text = toml::to_string(&document).unwrap_or_else(|_| seed.to_owned());
    let mut text = text.into_bytes();
    for (at, byte) in bytes {
        if !text.is_empty() {
            let index = at.index(text.len());
            text[index] = byte;
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[test]
fn no_mutation_of_a_valid_manifest_makes_the_checker_panic() {
    const BUDGET: Duration = Duration::from_secs(60);
    let dir = tempfile::tempdir().unwrap();
    let seeds = seeds(dir.path());
    let runtime: Arc<Runtime> = Runtime::new(RuntimeConfig {
        cache_dir: Some(common::root().join("target/sluice-cache")),
        max_instances: 16,
        ..RuntimeConfig::default()
    })
    .unwrap();
    for (path, text) in &seeds {
        sluice::manifest::parse(text, path, &runtime)
            .unwrap_or_else(|error| panic!("seed {} is valid: {error}", path.display()));
    }

    let started = Instant::now();
    let (accepted, refused) = (Cell::new(0u64), Cell::new(0u64));
    let mut runner = TestRunner::new(Config {
        cases: 100_000,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        prop::sample::select((0..seeds.len()).collect::<Vec<_>>()),
        prop::collection::vec(any_mutation(), 1..5),
    );
    runner
        .run(&strategy, |(seed, mutations)| {
            // The budget bounds the whole run: cases past it are not tried.
            if started.elapsed() > BUDGET {
                return Ok(());
            }
            let (path, text) = &seeds[seed];
            let mutant = mutate(text, &mutations);
            match sluice::manifest::parse(&mutant, path, &runtime) {
                Ok(_) => accepted.set(accepted.get() + 1),
                Err(error) => {
                    prop_assert!(!error.message.is_empty());
                    refused.set(refused.get() + 1);
                }
            }
            Ok(())
        })
        .unwrap();
    let (accepted, refused) = (accepted.get(), refused.get());
    let peak = own_peak_rss();
    eprintln!(
        "manifest mutants: {accepted} accepted, {refused} refused in {:?}; peak memory {} MiB",
        started.elapsed(),
        peak >> 20
    );
    assert!(
        refused > 0 && accepted + refused >= 100,
        "too few mutants ran"
    );
    assert!(peak < 2 * GIB, "peak memory {} MiB", peak >> 20);
}
