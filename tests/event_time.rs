//! Event time beyond the Spark vectors (tests/structured.rs): event times given by a
//! UDF, and aggregations by reduce and fold UDFs, in state across batches and restarts.
//! Jobs read a queue of batches and are driven batch by batch (common::stepper).

mod common;

use std::path::Path;

use common::run::{Run, message_of};
use common::stepper::Stepper;
use sluice::manifest::JobConfig;
use sluice::runtime::{Runtime, RuntimeConfig};
use sluice_abi::Value;

/// A job reading `batches` (JSON lines, one array of records per batch) through `steps`
/// into the collect sink `out`, checkpointed in `dir`.
fn job(dir: &Path, steps: &str, batches: &[&str], runtime: &Runtime) -> Result<JobConfig, String> {
    let input = dir.join("batches.jsonl");
    std::fs::write(&input, batches.join("\n")).unwrap();
    let text = format!(
        r#"name = "event-time"
batch_interval = "1s"
[udfs]
c = "{udfs}"
[checkpoint]
dir = "{checkpoint}"
every = 1
[[sources]]
name = "in"
kind = "queue"
batches_file = "{input}"
[[streams]]
name = "query"
from = "in"
steps = [{steps}]
[[sinks]]
name = "out"
from = "query"
kind = "collect"
"#,
        udfs = common::udf("conformance").display(),
        checkpoint = dir.join("checkpoint").display(),
        input = input.display(),
    );
    std::fs::write(dir.join("job.toml"), &text).unwrap();
    sluice::manifest::parse(&text, &dir.join("job.toml"), runtime).map_err(|e| format!("{e:#}"))
}

fn runtime() -> std::sync::Arc<Runtime> {
    Runtime::new(RuntimeConfig::default()).expect("runtime")
}

/// The output records of a batch as JSON, in output order.
fn json(records: &[Value]) -> Vec<String> {
    records.iter().map(Value::to_json).collect()
}

#[test]
fn a_udf_gives_the_event_time_that_windows_and_the_watermark_use() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let steps = r#"{ op = "event_time", udf = "c#event_ms_of_seconds", delay = "5s" },
        { op = "event_aggregate", keys = ["k"], window = "10s", aggregates = ["count"] }"#;
    let batches = [
        r#"[{"k": "a", "seconds": 1}, {"k": "a", "seconds": 8}, {"k": "b", "seconds": 12}, {"k": "a"}]"#,
        r#"[{"k": "a", "seconds": 26}]"#,
    ];
    let config = job(dir.path(), steps, &batches, &runtime).unwrap();
    let mut job = Stepper::start(&config, &runtime).unwrap();
    let (out, report) = job.batch("out").unwrap();
    assert!(out.is_empty(), "{:?}", json(&out));
    let stats = report.event_time.expect("the batch had times");
    // The record without `seconds` has no time (the UDF returns null): in no window.
    assert_eq!((stats.min, stats.max), (1_000, 12_000));
    assert_eq!(report.steps[0].state_rows, 2);
    job.batch("out").unwrap();
    // The watermark is now 26 s - 5 s: a no-data batch closes [0, 10) and [10, 20).
    let (out, report) = job.batch("out").unwrap();
    assert_eq!(report.watermark_ms, 21_000);
    assert_eq!(
        json(&out),
        [
            r#"{"window":{"start":0,"end":10000},"key":{"k":"a"},"count":2}"#,
            r#"{"window":{"start":10000,"end":20000},"key":{"k":"b"},"count":1}"#,
        ]
    );
}

#[test]
fn a_udf_returning_no_integer_fails_the_batch_naming_the_step_and_the_record() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let steps = r#"{ op = "event_time", udf = "c#event_time_as_text", delay = "5s" }"#;
    let batches = [r#"[{"k": "a", "seconds": 1}, {"k": "b", "seconds": 7}]"#];
    let config = job(dir.path(), steps, &batches, &runtime).unwrap();
    let error = format!(
        "{:#}",
        Stepper::start(&config, &runtime)
            .unwrap()
            .batch("out")
            .unwrap_err()
    );
    for part in [
        "event_time",
        "c#event_time_as_text",
        r#"returned "1" for record 0"#,
        r#"{"k":"a","seconds":1}"#,
        "epoch milliseconds",
    ] {
        assert!(error.contains(part), "`{part}` is not in: {error}");
    }
}

#[test]
fn event_time_udfs_are_checked_for_their_kind() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let error = job(
        dir.path(),
        r#"{ op = "event_time", udf = "c#sum" }"#,
        &[],
        &runtime,
    )
    .unwrap_err();
    assert!(
        error.contains("needs a map function, but `sum` is a reduce function"),
        "{error}"
    );
    let error = job(
        dir.path(),
        r#"{ op = "event_time", field = "t", udf = "c#event_ms_of_seconds" }"#,
        &[],
        &runtime,
    )
    .unwrap_err();
    assert!(error.contains("needs one of"), "{error}");
}

/// Words by key in 10 s windows, with a count, the longest word (reduce) and every word
/// in arrival order (fold), in update mode.
const WORDS: &str = r#"{ op = "event_time", field = "seconds", unit = "s", delay = "10s" },
    { op = "event_aggregate", keys = ["k"], window = "10s", output_mode = "update",
      aggregates = ["count", "reduce(word, c#longer) as longest", "fold(word, c#append_word, []) as words"] }"#;

#[test]
fn reduce_and_fold_udfs_aggregate_across_batches_and_a_restart() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let batches = [
        r#"[{"k": "a", "seconds": 1, "word": "x"}, {"k": "a", "seconds": 2, "word": "hello"}, {"k": "b", "seconds": 3, "word": "yo"}]"#,
        r#"[{"k": "a", "seconds": 4, "word": "hi"}]"#,
        r#"[{"k": "a", "seconds": 5, "word": "goodbye"}]"#,
    ];
    let config = job(dir.path(), WORDS, &batches, &runtime).unwrap();
    let mut job = Stepper::start(&config, &runtime).unwrap();
    let (out, _) = job.batch("out").unwrap();
    assert_eq!(
        json(&out),
        [
            r#"{"window":{"start":0,"end":10000},"key":{"k":"a"},"count":2,"longest":"hello","words":["x","hello"]}"#,
            r#"{"window":{"start":0,"end":10000},"key":{"k":"b"},"count":1,"longest":"yo","words":["yo"]}"#,
        ]
    );
    let (out, _) = job.batch("out").unwrap();
    assert_eq!(
        json(&out),
        [
            r#"{"window":{"start":0,"end":10000},"key":{"k":"a"},"count":3,"longest":"hello","words":["x","hello","hi"]}"#
        ]
    );
    drop(job);
    let mut restarted = Stepper::start(&config, &runtime).unwrap();
    let (out, _) = restarted.batch("out").unwrap();
    assert_eq!(
        json(&out),
        [
            r#"{"window":{"start":0,"end":10000},"key":{"k":"a"},"count":4,"longest":"goodbye","words":["x","hello","hi","goodbye"]}"#
        ]
    );
}

#[test]
fn sessions_merge_what_a_reduce_udf_folded() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let steps = r#"{ op = "event_time", field = "seconds", unit = "s", delay = "10s" },
        { op = "event_aggregate", keys = ["k"], session_gap = "15s", output_mode = "complete",
          aggregates = ["count", "reduce(word, c#longer) as longest"] }"#;
    let batches = [
        r#"[{"k": "a", "seconds": 1, "word": "ab"}, {"k": "a", "seconds": 30, "word": "abcd"}]"#,
        r#"[{"k": "a", "seconds": 16, "word": "abc"}]"#,
    ];
    let config = job(dir.path(), steps, &batches, &runtime).unwrap();
    let mut job = Stepper::start(&config, &runtime).unwrap();
    let (out, _) = job.batch("out").unwrap();
    assert_eq!(out.len(), 2, "{:?}", json(&out));
    // [16, 31) touches [1, 16) and [30, 45): one session.
    let (out, _) = job.batch("out").unwrap();
    assert_eq!(
        json(&out),
        [r#"{"window":{"start":1000,"end":45000},"key":{"k":"a"},"count":3,"longest":"abcd"}"#]
    );
}

#[test]
fn a_fold_is_refused_with_sessions_and_a_udf_of_the_wrong_kind_anywhere() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let steps = r#"{ op = "event_time", field = "seconds", unit = "s", delay = "10s" },
        { op = "event_aggregate", keys = ["k"], session_gap = "15s",
          aggregates = ["fold(word, c#append_word, []) as words"] }"#;
    let error = job(dir.path(), steps, &[], &runtime).unwrap_err();
    assert!(
        error.contains("fold aggregate `words` cannot be used with session windows")
            && error.contains("reduce"),
        "{error}"
    );
    let steps = r#"{ op = "event_time", field = "seconds", unit = "s", delay = "10s" },
        { op = "event_aggregate", keys = ["k"], window = "10s",
          aggregates = ["reduce(word, c#append_word)"] }"#;
    let error = job(dir.path(), steps, &[], &runtime).unwrap_err();
    assert!(
        error.contains("needs a reduce function, but `append_word` is a fold function"),
        "{error}"
    );
    let steps = r#"{ op = "event_time", field = "seconds", unit = "s", delay = "10s" },
        { op = "event_aggregate", keys = ["k"], window = "10s",
          aggregates = ["fold(word, c#append_word, [oops) as words"] }"#;
    let error = job(dir.path(), steps, &[], &runtime).unwrap_err();
    assert!(error.contains("is not JSON"), "{error}");
}

#[test]
fn each_batch_done_log_line_gives_the_watermark_and_event_times() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let steps = r#"{ op = "event_time", field = "seconds", unit = "s", delay = "5s" },
        { op = "event_aggregate", keys = ["k"], window = "10s", aggregates = ["count"] }"#;
    let batches = [
        r#"[{"k": "a", "seconds": 3}, {"k": "a", "seconds": 20}]"#,
        r#"[{"k": "a", "seconds": 12}]"#,
    ];
    job(dir.path(), steps, &batches, &runtime).unwrap();
    let run = Run::start(&dir.path().join("job.toml"), &[]);
    let (status, log) = run.finish();
    assert!(status.success(), "{log:#?}");
    let lines: Vec<&serde_json::Value> = log
        .iter()
        .filter(|line| message_of(line) == "batch done")
        .collect();
    let field = |line: &serde_json::Value, name: &str| line["fields"][name].as_i64();
    let first = lines[0];
    assert_eq!(
        (
            field(first, "watermark_ms"),
            field(first, "event_time_min_ms"),
            field(first, "event_time_max_ms")
        ),
        (Some(0), Some(3_000), Some(20_000)),
        "{lines:?}"
    );
    assert_eq!(
        first["fields"]["event_time_avg_ms"].as_f64(),
        Some(11_500.0),
        "{lines:?}"
    );
    // The second batch uses the watermark of the first's data: 20 s - 5 s; it emits and
    // evicts [0, 10), keeping [10, 20) and [20, 30).
    assert_eq!(field(lines[1], "watermark_ms"), Some(15_000), "{lines:?}");
    let operators: serde_json::Value =
        serde_json::from_str(lines[1]["fields"]["state_operators"].as_str().unwrap()).unwrap();
    assert_eq!(
        operators,
        serde_json::json!([{
            "step": "query/2",
            "state_rows": 2,
            "rows_dropped_by_watermark": 0,
            "late_rows_dropped": 0,
        }]),
        "{lines:?}"
    );
}

#[test]
fn late_rows_go_to_a_files_sink_once_and_again_the_same_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Watermark 25 s from batch 2 on (30 s - 5 s). In batch 3, 14 s and 3 s are late in
    // both their sliding windows; 22 s still counts in [20, 30), 27 s in all of its.
    let batches = [
        r#"[{"k": "a", "seconds": 30}]"#,
        "[]",
        r#"[{"k": "a", "seconds": 14}, {"k": "a", "seconds": 22}, {"k": "b", "seconds": 3}, {"k": "a", "seconds": 27}]"#,
        r#"[{"k": "c", "seconds": 1}, {"k": "a", "seconds": 26}]"#,
    ];
    std::fs::write(dir.path().join("batches.jsonl"), batches.join("\n")).unwrap();
    // Only the late rows are written: the aggregation runs for its late stream alone.
    let manifest = r#"name = "late-rows"
batch_interval = "50ms"
[checkpoint]
dir = "checkpoint"
every = 2
[[sources]]
name = "in"
kind = "queue"
batches_file = "batches.jsonl"
[[streams]]
name = "counts"
from = "in"
steps = [
  { op = "event_time", field = "seconds", unit = "s", delay = "5s" },
  { op = "event_aggregate", keys = ["k"], window = "10s", slide = "5s",
    aggregates = ["count"], output_mode = "update", late_rows = "late" },
]
[[sinks]]
from = "late"
kind = "files"
prefix = "out/late"
suffix = "jsonl"
format = "json_lines"
"#;
    let path = dir.path().join("job.toml");
    std::fs::write(&path, manifest).unwrap();
    // Every late file that is not empty, by name, in batch order.
    let late = || -> Vec<(String, String)> {
        common::files_by_name(&dir.path().join("out"))
            .into_iter()
            .filter(|(_, text)| !text.is_empty())
            .collect()
    };
    let output = common::wordcount::sluice_run(&path, &["--batches", "3"]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    let first = late();
    let contents = |files: &[(String, String)]| -> Vec<String> {
        files.iter().map(|(_, text)| text.clone()).collect()
    };
    assert_eq!(
        contents(&first),
        ["{\"k\":\"a\",\"seconds\":14}\n{\"k\":\"b\",\"seconds\":3}\n"]
    );
    // The state checkpoint is of batch 2: the restart re-runs batch 3 from the log with
    // the recovered watermark, rewriting its late file the same, then runs batch 4.
    let output = common::wordcount::sluice_run(&path, &[]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(
        log.contains("re-running the batches cut before the restart"),
        "{log}"
    );
    let second = late();
    assert_eq!(second[0], first[0]);
    assert_eq!(
        contents(&second),
        [
            "{\"k\":\"a\",\"seconds\":14}\n{\"k\":\"b\",\"seconds\":3}\n",
            "{\"k\":\"c\",\"seconds\":1}\n"
        ]
    );
}

#[test]
fn a_rerun_batch_uses_the_watermark_its_first_run_logged_with_two_inputs_under_min() {
    let dir = tempfile::tempdir().unwrap();
    // Two inputs, 5 s delay each, min policy; the state checkpoint is of batch 4. After
    // batch 5, `a` is at 35 s and `b` (from batch 1) at 45 s: batches 6 and 7 use 35 s.
    // A restart re-runs 5 to 7, where `b` has no rows: recomputed, the watermark would
    // stay at 5 s, evict nothing in batch 6 and take 12 s (late at 35 s) in batch 7.
    let a = [
        r#"[{"k": "a", "seconds": 10}]"#,
        "[]",
        "[]",
        "[]",
        r#"[{"k": "a", "seconds": 40}]"#,
        r#"[{"k": "a", "seconds": 36}]"#,
        r#"[{"k": "a", "seconds": 12}, {"k": "a", "seconds": 38}]"#,
    ];
    let b = [
        r#"[{"k": "b", "seconds": 50}]"#,
        "[]",
        "[]",
        "[]",
        "[]",
        "[]",
        "[]",
    ];
    std::fs::write(dir.path().join("a.jsonl"), a.join("\n")).unwrap();
    std::fs::write(dir.path().join("b.jsonl"), b.join("\n")).unwrap();
    let manifest = r#"name = "two-inputs"
batch_interval = "50ms"
[checkpoint]
dir = "checkpoint"
every = 4
[[sources]]
name = "in_a"
kind = "queue"
batches_file = "a.jsonl"
[[sources]]
name = "in_b"
kind = "queue"
batches_file = "b.jsonl"
[[streams]]
name = "a"
from = "in_a"
steps = [{ op = "event_time", field = "seconds", unit = "s", delay = "5s" }]
[[streams]]
name = "b"
from = "in_b"
steps = [{ op = "event_time", field = "seconds", unit = "s", delay = "5s" }]
[[streams]]
name = "counts"
from = "a"
steps = [
  { op = "union", with = ["b"] },
  { op = "event_aggregate", keys = ["k"], window = "10s", aggregates = ["count"],
    output_mode = "update", late_rows = "late" },
]
[[sinks]]
from = "counts"
kind = "files"
prefix = "out/counts"
suffix = "jsonl"
format = "json_lines"
[[sinks]]
from = "late"
kind = "files"
prefix = "out/late"
suffix = "jsonl"
format = "json_lines"
"#;
    let path = dir.path().join("job.toml");
    std::fs::write(&path, manifest).unwrap();
    let outputs = || common::files_by_name(&dir.path().join("out"));
    // What each batch that ran reported: (batch, watermark, late rows, state).
    let reports = |log: &[serde_json::Value], replayed: bool| -> Vec<(i64, i64, i64, String)> {
        log.iter()
            .filter(|line| message_of(line) == "batch done")
            .map(|line| &line["fields"])
            .filter(|fields| fields["replayed"].as_bool() == Some(replayed))
            .filter_map(|fields| {
                Some((
                    fields["batch"].as_i64()?,
                    fields["watermark_ms"].as_i64()?,
                    fields["late_rows"].as_i64()?,
                    fields["state_operators"].as_str()?.to_owned(),
                ))
            })
            .collect()
    };
    let (status, log) = Run::start(&path, &["--batches", "7"]).finish();
    assert!(status.success(), "{log:#?}");
    let first = reports(&log, false);
    let watermarks: Vec<(i64, i64)> = first.iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(
        watermarks,
        [(1, 0), (2, 5_000), (5, 5_000), (6, 35_000), (7, 35_000)],
        "{log:#?}"
    );
    let written = outputs();
    let late: Vec<&str> = written
        .iter()
        .filter(|(name, text)| name.starts_with("late") && !text.is_empty())
        .map(|(_, text)| text.as_str())
        .collect();
    assert_eq!(late, ["{\"k\":\"a\",\"seconds\":12}\n"]);

    let (status, log) = Run::start(&path, &[]).finish();
    assert!(status.success(), "{log:#?}");
    let rerun = reports(&log, true);
    assert_eq!(rerun, first[2..], "{log:#?}");
    let again = outputs();
    for file in &written {
        assert!(
            again.contains(file),
            "{file:?} was rewritten otherwise: {again:#?}"
        );
    }
}

#[test]
fn a_late_stream_shared_by_steps_reading_one_stream_holds_a_row_once_only_if_each_dropped_it() {
    let dir = tempfile::tempdir().unwrap();
    // `timed` fans out to a count per 10 s window and a dedup, both routing late rows to
    // `late`. Watermark 35 s in batch 3: 12 s is late for both; 32 s for the dedup only
    // (its window [30, 40) is open), so the count keeps it and it is not late. In batch
    // 4 (watermark 36 s), 1 s is late for both, 33 s again for the dedup only.
    let batches = [
        r#"[{"k": "a", "seconds": 40}]"#,
        "[]",
        r#"[{"k": "a", "seconds": 12}, {"k": "a", "seconds": 32}, {"k": "b", "seconds": 36}, {"k": "a", "seconds": 41}]"#,
        r#"[{"k": "c", "seconds": 1}, {"k": "a", "seconds": 33}]"#,
    ];
    std::fs::write(dir.path().join("batches.jsonl"), batches.join("\n")).unwrap();
    let manifest = r#"name = "fan-out"
batch_interval = "50ms"
[checkpoint]
dir = "checkpoint"
every = 2
[[sources]]
name = "in"
kind = "queue"
batches_file = "batches.jsonl"
[[streams]]
name = "timed"
from = "in"
steps = [{ op = "event_time", field = "seconds", unit = "s", delay = "5s" }]
[[streams]]
name = "counts"
from = "timed"
steps = [{ op = "event_aggregate", keys = ["k"], window = "10s", aggregates = ["count"],
  output_mode = "update", late_rows = "late" }]
[[streams]]
name = "firsts"
from = "timed"
steps = [{ op = "dedup", fields = ["k", "seconds"], late_rows = "late" }]
[[sinks]]
from = "late"
kind = "files"
prefix = "out/late"
suffix = "jsonl"
format = "json_lines"
[[sinks]]
from = "counts"
kind = "files"
prefix = "out/counts"
suffix = "jsonl"
format = "json_lines"
"#;
    let path = dir.path().join("job.toml");
    std::fs::write(&path, manifest).unwrap();
    // The text of every file of `prefix` that is not empty, in batch order.
    let written = |prefix: &str| -> Vec<String> {
        common::files_by_name(&dir.path().join("out"))
            .into_iter()
            .filter(|(name, text)| name.starts_with(prefix) && !text.is_empty())
            .map(|(_, text)| text)
            .collect()
    };
    let output = common::wordcount::sluice_run(&path, &["--batches", "3"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(written("late"), ["{\"k\":\"a\",\"seconds\":12}\n"]);
    // The count kept 32 s, which the dedup dropped.
    let counted_32 = written("counts")
        .iter()
        .flat_map(|text| text.lines())
        .any(|line| {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            row["window"]["start"] == 30_000 && row["key"]["k"] == "a" && row["count"] == 1
        });
    assert!(counted_32, "{:?}", written("counts"));
    // A restart re-runs batch 3 (the checkpoint is of batch 2) the same, then runs 4.
    let output = common::wordcount::sluice_run(&path, &[]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(
        log.contains("re-running the batches cut before the restart"),
        "{log}"
    );
    assert_eq!(
        written("late"),
        [
            "{\"k\":\"a\",\"seconds\":12}\n",
            "{\"k\":\"c\",\"seconds\":1}\n"
        ]
    );
}
