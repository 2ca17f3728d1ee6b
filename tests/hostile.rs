//! Hostile guests: a component written against the WIT world directly (udfs/hostile)
//! answers records nested past the depth limit, too few or too many results for every
//! function kind, bad state cells and 64 MiB failure messages. Each case must end its own
//! job with a clear error naming the step and, where it can be told, the record, while a
//! healthy job of the same host keeps computing batches. Then the compiled-component cache
//! is damaged in many ways: the artifact is rebuilt and the output stays exact.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sluice::host::Host;
use sluice::runtime::RuntimeConfig;
use sluice_abi::Value;

/// A generator counted every 50 ms: a job with nothing to do with the hostile one.
const HEALTHY: &str = "name = \"healthy\"\nbatch_interval = \"50ms\"\n[[sources]]\nname = \"g\"\nkind = \"generator\"\nrate = 1000\n[[streams]]\nname = \"c\"\nfrom = \"g\"\nsteps = [{ op = \"count\" }]\n[[sinks]]\nfrom = \"c\"\nkind = \"collect\"\n";

/// A job over the hostile component: `records` (a TOML array) in one batch, then an empty
/// one, through `steps` (TOML step tables using the alias `h`), with `extra` top-level
/// tables (limits, checkpoint) and a collect sink `out`.
fn hostile_job(records: &str, steps: &str, extra: &str) -> String {
    format!(
        "name = \"hostile\"\nbatch_interval = \"50ms\"\npartitions = 1\n{extra}\n[udfs]\nh = \"{}\"\n[[sources]]\nname = \"n\"\nkind = \"queue\"\nbatches = [{records}, []]\n[[streams]]\nname = \"m\"\nfrom = \"n\"\nsteps = [{steps}]\n[[sinks]]\nname = \"out\"\nfrom = \"m\"\nkind = \"collect\"\n",
        common::udf("hostile").display()
    )
}

const NUMBERS: &str = "[1, 2, 3]";
const PAIRS: &str = "[[\"a\", 1], [\"b\", 2], [\"a\", 3]]";

fn step(op: &str, function: &str) -> String {
    format!("{{ op = \"{op}\", udf = \"h#{function}\" }}")
}

/// A `[checkpoint]` table in a fresh directory (state steps need one).
fn checkpoint(dir: &Path) -> String {
    format!(
        "[checkpoint]\ndir = \"{}\"",
        dir.join("checkpoint").display()
    )
}

fn host(cache_dir: Option<PathBuf>) -> Host {
    Host::new(RuntimeConfig {
        cache_dir,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

/// Runs the hostile job `manifest` next to a healthy one in one host; returns the hostile
/// job's error, after checking that the healthy job computed batches after it failed.
fn fails_alone(manifest: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let hostile_path = dir.path().join("hostile.toml");
    let healthy_path = dir.path().join("healthy.toml");
    std::fs::write(&hostile_path, manifest).unwrap();
    std::fs::write(&healthy_path, HEALTHY).unwrap();
    let tokio = tokio::runtime::Runtime::new().unwrap();
    tokio.block_on(async {
        let host = host(None);
        let mut healthy = host
            .start(host.load(&healthy_path).unwrap(), None, &Default::default())
            .unwrap();
        let hostile = host
            .start(host.load(&hostile_path).unwrap(), None, &Default::default())
            .unwrap();
        let error = hostile.finished().await.expect_err("the hostile job fails");
        // Drop what the healthy job reported before the failure: only later batches count.
        while healthy.reports.try_recv().is_ok() {}
        for _ in 0..3 {
            let report = tokio::time::timeout(Duration::from_secs(10), healthy.reports.recv())
                .await
                .expect("the healthy job keeps computing batches");
            assert!(report.is_some(), "the healthy job is still running");
        }
        healthy.stop();
        healthy
            .finished()
            .await
            .expect("the healthy job ends cleanly");
        format!("{error:#}")
    })
}

/// Asserts that `error` holds every one of `parts`.
fn assert_says(error: &str, parts: &[&str]) {
    for part in parts {
        assert!(error.contains(part), "`{part}` missing from: {error}");
    }
}

const TOO_DEEP: &str = "nested deeper than 1000 levels";

#[test]
fn records_nested_past_the_limit_are_refused_at_the_boundary() {
    for function in ["deep_1001", "deep_10000", "deep_1000000"] {
        let error = fails_alone(&hostile_job(NUMBERS, &step("map", function), ""));
        assert_says(
            &error,
            &[
                "job `hostile` failed on the batch of time",
                "stream `m` step 1 (map",
                &format!("#{function}`"),
                TOO_DEEP,
                "(record 0 of its partition)",
            ],
        );
    }
    let error = fails_alone(&hostile_job(
        NUMBERS,
        &step("flat_map", "flat_map_deep_1001"),
        "",
    ));
    assert_says(
        &error,
        &["(flat_map", TOO_DEEP, "(record 0 of its partition)"],
    );
}

#[test]
fn a_key_nested_a_million_deep_never_reaches_reduce_by_key() {
    let steps = format!(
        "{}, {}",
        step("map", "deep_key_1000000"),
        step("reduce_by_key", "sum")
    );
    let error = fails_alone(&hostile_job(NUMBERS, &steps, ""));
    assert_says(&error, &["#deep_key_1000000`", TOO_DEEP]);
}

/// Runs `manifest` alone to the end of its input and returns what its sink kept.
fn collected(manifest: &str, cache_dir: Option<PathBuf>) -> Vec<Vec<Value>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.toml");
    std::fs::write(&path, manifest).unwrap();
    let tokio = tokio::runtime::Runtime::new().unwrap();
    tokio.block_on(async {
        let host = host(cache_dir);
        let job = host.load(&path).unwrap();
        let collected = job.collected().clone();
        host.start(job, None, &Default::default())
            .unwrap()
            .finished()
            .await
            .expect("the job runs to the end of its input");
        collected
            .batches("out")
            .into_iter()
            .map(|(_, records)| records)
            .collect()
    })
}

fn depth(mut value: &Value) -> usize {
    let mut levels = 0;
    while let Value::List(items) = value {
        levels += 1;
        value = &items[0];
    }
    levels
}

#[test]
fn records_at_the_limit_go_through_to_every_sink() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("deep");
    let manifest = hostile_job(NUMBERS, &step("map", "deep_1000"), "").replace(
        "[[sinks]]\n",
        &format!(
            "[[sinks]]\nfrom = \"m\"\nkind = \"files\"\nprefix = \"{}\"\nsuffix = \"jsonl\"\nformat = \"json_lines\"\n[[sinks]]\n",
            prefix.display()
        ),
    );
    let batches = collected(&manifest, None);
    assert_eq!(batches[0].len(), 3);
    assert!(batches[0].iter().all(|record| depth(record) == 1000));
    let written: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .filter(|text| !text.is_empty())
        .collect();
    assert_eq!(written.len(), 1, "one batch had records");
    let line = written[0].lines().next().unwrap();
    assert_eq!(line, format!("{}7{}", "[".repeat(1000), "]".repeat(1000)));
}

#[test]
fn wrong_counts_from_record_functions_fail_naming_both_counts() {
    let nine = "[1, 2, 3, 4, 5, 6, 7, 8, 9]";
    let cases = [
        (
            hostile_job(NUMBERS, &step("map", "map_short"), ""),
            vec![
                "step 1 (map",
                "#map_short`",
                "returned 2 results for 3 records, where exactly 3 are owed",
                "(record 2 of its partition)",
            ],
        ),
        (
            hostile_job(NUMBERS, &step("map", "map_long"), ""),
            vec!["returned 6 results for 3 records, where exactly 3 are owed"],
        ),
        (
            hostile_job(PAIRS, &step("map_values", "map_short"), ""),
            vec!["(map_values", "returned 2 results for 3 records"],
        ),
        (
            hostile_job(nine, &step("filter", "mask_short"), ""),
            vec![
                "(filter",
                "#mask_short`",
                "a mask of 1 bytes for 9 records, where exactly 2 are owed",
            ],
        ),
        (
            hostile_job(nine, &step("filter", "mask_long"), ""),
            vec!["a mask of 3 bytes for 9 records, where exactly 2 are owed"],
        ),
        (
            hostile_job(NUMBERS, &step("flat_map", "flat_map_short"), ""),
            vec![
                "#flat_map_short`",
                "returned 2 groups of results for 3 records",
                "(record 2 of its partition)",
            ],
        ),
        (
            hostile_job(PAIRS, &step("flat_map_values", "flat_map_short"), ""),
            vec![
                "(flat_map_values",
                "returned 2 groups of results for 3 records",
            ],
        ),
        (
            hostile_job(NUMBERS, &step("flat_map", "flat_map_long"), ""),
            vec!["returned 4 groups of results for 3 records"],
        ),
        (
            hostile_job(
                NUMBERS,
                &format!("{}, {}", step("map", "identity"), step("map", "map_short")),
                "",
            ),
            vec![
                "#identity -> ",
                "returned 2 records for 3 input records, where exactly 3 are owed",
            ],
        ),
        (
            hostile_job(
                NUMBERS,
                &format!(
                    "{}, {}",
                    step("filter", "keep_all"),
                    step("map", "map_long")
                ),
                "",
            ),
            vec!["returned 6 records for 3 input records, where at most 3 are owed"],
        ),
    ];
    for (manifest, parts) in cases {
        assert_says(&fails_alone(&manifest), &parts);
    }
}

#[test]
fn wrong_counts_and_cells_from_group_functions_fail_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let state = checkpoint(dir.path());
    let cases = [
        (
            hostile_job(PAIRS, &step("reduce_by_key", "reduce_short"), ""),
            vec![
                "(reduce_by_key",
                "#reduce_short`",
                "returned 0 results for 1 groups, where exactly 1 are owed",
            ],
        ),
        (
            hostile_job(NUMBERS, &step("reduce", "reduce_long"), ""),
            vec!["(reduce", "returned 2 results for 1 groups"],
        ),
        (
            hostile_job(PAIRS, &step("update_state_by_key", "update_short"), &state),
            vec![
                "(update_state_by_key",
                "returned 1 state cells for 2 keys, where exactly 2 are owed",
            ],
        ),
        (
            hostile_job(
                PAIRS,
                &step("update_state_by_key", "update_bad_cell"),
                &state,
            ),
            vec![
                "#update_bad_cell`",
                "answered group 0 of its input without a state cell",
            ],
        ),
        (
            hostile_job(PAIRS, &step("map_with_state", "count_short"), &state),
            vec![
                "(map_with_state",
                "returned 1 groups for 2 keys, where exactly 2 are owed",
            ],
        ),
        (
            hostile_job(PAIRS, &step("map_with_state", "count_bad_cell"), &state),
            vec!["#count_bad_cell`", "without a state cell"],
        ),
    ];
    for (manifest, parts) in cases {
        std::fs::remove_dir_all(dir.path().join("checkpoint")).ok();
        assert_says(&fails_alone(&manifest), &parts);
    }
}

#[test]
fn huge_failure_and_panic_messages_are_cut_to_the_output_limit() {
    for (function, said) in [("fail_huge", "fff"), ("panic_huge", "panicked: ppp")] {
        let error = fails_alone(&hostile_job(NUMBERS, &step("map", function), ""));
        assert!(error.len() < (64 << 10) + 1000, "{} bytes", error.len());
        let dropped = (64 << 20) - (64 << 10);
        assert_says(
            &error,
            &[
                &format!("#{function}`"),
                said,
                &format!("[{dropped} more bytes dropped"),
                "`limits.output`",
                "(record 0 of its partition)",
            ],
        );
    }
}

#[test]
fn limits_name_themselves_and_their_key() {
    let error = fails_alone(&hostile_job(
        NUMBERS,
        &step("map", "huge_answer"),
        "[limits]\ntransfer = \"1MiB\"",
    ));
    assert_says(
        &error,
        &[
            "#huge_answer`",
            "more than the transfer limit of 1 MiB",
            "raise `limits.transfer`",
        ],
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.toml");
    let manifest = hostile_job(
        NUMBERS,
        &step("map", "identity"),
        "[limits]\nmemory = \"1MiB\"",
    );
    std::fs::write(&path, manifest).unwrap();
    let error = format!("{:#}", host(None).load(&path).err().expect("cannot start"));
    assert_says(
        &error,
        &[
            "of memory to start, past the limit of 1048576 bytes (1.00 MiB)",
            "raise `limits.memory`",
        ],
    );
    assert!(!error.contains("pool"), "{error}");
}

// ---- Damaged compiled-component cache ------------------------------------------------

const LINES: &str = "[\"a b a\", \"c a\"], [\"b b\"]";

/// A word count over the wordcount component, whose exact totals are known.
fn word_count_job() -> String {
    format!(
        "name = \"words\"\nbatch_interval = \"50ms\"\npartitions = 2\n[udfs]\nwc = \"{}\"\n[[sources]]\nname = \"lines\"\nkind = \"queue\"\nbatches = [{LINES}, []]\n[[streams]]\nname = \"counts\"\nfrom = \"lines\"\nsteps = [{{ op = \"flat_map\", udf = \"wc#tokenize\" }}, {{ op = \"map\", udf = \"wc#with_one\" }}, {{ op = \"reduce_by_key\", udf = \"wc#sum\" }}]\n[[sinks]]\nname = \"out\"\nfrom = \"counts\"\nkind = \"collect\"\n",
        common::udf("wordcount").display()
    )
}

fn totals(batches: &[Vec<Value>]) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for record in batches.iter().flatten() {
        let (Value::Tuple(pair) | Value::List(pair)) = record else {
            panic!("{record} is not a pair")
        };
        let (Value::String(word), Value::Int(count)) = (&pair[0], &pair[1]) else {
            panic!("{record} is not a word count")
        };
        *totals.entry(word.clone()).or_insert(0) += count;
    }
    totals
}

fn expected_totals() -> BTreeMap<String, i64> {
    [("a", 3), ("b", 3), ("c", 1)]
        .into_iter()
        .map(|(word, count)| (word.to_owned(), count))
        .collect()
}

/// The one artifact (`.cwasm`) in `cache`, and its seal.
fn artifact(cache: &Path) -> (PathBuf, PathBuf) {
    let artifacts: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    let seal = artifacts[0].with_extension("cwasm.sha256");
    (artifacts[0].clone(), seal)
}

/// A small deterministic generator, so that a failing trial can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

#[test]
fn a_damaged_cached_artifact_is_rebuilt_and_the_output_stays_exact() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = Some(cache.path().to_owned());
    assert_eq!(
        totals(&collected(&word_count_job(), cache_dir.clone())),
        expected_totals()
    );
    let (path, seal) = artifact(cache.path());
    let pristine = std::fs::read(&path).unwrap();
    let pristine_seal = std::fs::read(&seal).unwrap();

    // Another component's intact artifact, to swap in.
    let other = tempfile::tempdir().unwrap();
    collected(
        &hostile_job(NUMBERS, &step("map", "identity"), ""),
        Some(other.path().to_owned()),
    );
    let (other_artifact, other_seal) = artifact(other.path());

    let mut random = Lcg(9);
    type Damage = Box<dyn Fn(&mut Lcg, &Path, &Path)>;
    let damages: Vec<(&str, Damage)> = vec![
        (
            "flipped bytes",
            Box::new(|random, path, _| {
                let mut bytes = std::fs::read(path).unwrap();
                for _ in 0..=random.below(64) {
                    let at = random.below(bytes.len());
                    bytes[at] ^= 1 << random.below(8);
                }
                std::fs::write(path, bytes).unwrap();
            }),
        ),
        (
            "truncated",
            Box::new(|random, path, _| {
                let bytes = std::fs::read(path).unwrap();
                std::fs::write(path, &bytes[..random.below(bytes.len())]).unwrap();
            }),
        ),
        (
            "junk appended",
            Box::new(|_, path, _| {
                let mut bytes = std::fs::read(path).unwrap();
                bytes.extend_from_slice(b"junk");
                std::fs::write(path, bytes).unwrap();
            }),
        ),
        (
            "another component's artifact and seal",
            Box::new(move |_, path, seal| {
                std::fs::copy(&other_artifact, path).unwrap();
                std::fs::copy(&other_seal, seal).unwrap();
            }),
        ),
        (
            "seal removed",
            Box::new(|_, _, seal| std::fs::remove_file(seal).unwrap()),
        ),
        (
            "seal rewritten to match a flipped artifact",
            Box::new(|random, path, seal| {
                let mut bytes = std::fs::read(path).unwrap();
                let at = random.below(bytes.len());
                bytes[at] ^= 0xff;
                std::fs::write(path, &bytes).unwrap();
                std::fs::write(seal, "0".repeat(64)).unwrap();
            }),
        ),
    ];
    for round in 0..3 {
        for (what, damage) in &damages {
            damage(&mut random, &path, &seal);
            assert_eq!(
                totals(&collected(&word_count_job(), cache_dir.clone())),
                expected_totals(),
                "round {round}: {what}"
            );
            assert_eq!(
                std::fs::read(&path).unwrap(),
                pristine,
                "round {round}: {what}: the artifact was rebuilt"
            );
            assert_eq!(std::fs::read(&seal).unwrap(), pristine_seal);
        }
    }
}

#[test]
fn the_binary_says_it_rebuilt_a_damaged_artifact_in_sluice_cache_dir() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out = dir.path().join("out");
    let manifest = dir.path().join("job.toml");
    std::fs::write(
        &manifest,
        word_count_job().replace(
            "kind = \"collect\"\n",
            &format!(
                "kind = \"files\"\nprefix = \"{}\"\nformat = \"json_lines\"\n",
                out.join("counts").display()
            ),
        ),
    )
    .unwrap();
    let run = || {
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .env("SLUICE_CACHE_DIR", &cache)
            .arg("run")
            .arg(&manifest)
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{log}");
        let mut counts = Vec::new();
        for entry in std::fs::read_dir(&out).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            counts.extend(text.lines().map(|line| {
                let value: Value = serde_json::from_str(line).unwrap();
                value
            }));
        }
        std::fs::remove_dir_all(&out).unwrap();
        (totals(&[counts]), log)
    };
    assert_eq!(run().0, expected_totals());
    let (path, _) = artifact(&cache);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();
    let (totals, log) = run();
    assert_eq!(totals, expected_totals());
    assert_says(
        &log,
        &["ignoring unreadable cached component", "compiling it again"],
    );
}
