//! Batch times, as Spark's timer gives them: consecutive multiples of the interval, however
//! long batches take to compute; a lagging job queues its batches rather than skip times.

mod common;

use common::run::{Run, message_of};
use serde_json::Value as Json;
use sluice::batcher::BatchReport;
use sluice::checkpoint::RecoveryOptions;
use sluice::host::Host;
use sluice::runtime::RuntimeConfig;

/// 50 batches at a 20 ms interval while a UDF keeps both cores busy for 100 ms a batch.
#[test]
fn batch_times_stay_consecutive_while_both_cores_are_busy() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..200).map(|i| format!("line {i}")).collect();
    std::fs::write(dir.path().join("input.txt"), lines.join("\n")).unwrap();
    let manifest = dir.path().join("job.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"name = "busy"
batch_interval = "20ms"
partitions = 2

[udfs]
faulty = "{faulty}"

[[sources]]
name = "lines"
kind = "file"
path = "input.txt"
lines_per_batch = 4

[[streams]]
name = "slow"
from = "lines"
steps = [{{ op = "map", udf = "faulty#linger" }}]

[[sinks]]
from = "slow"
kind = "collect"
name = "out"
"#,
            faulty = common::udf("faulty").display(),
        ),
    )
    .unwrap();

    let reports = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let host = Host::new(RuntimeConfig::default()).unwrap();
        let job = host.load(&manifest).unwrap();
        let mut handle = host
            .start(job, Some(50), &RecoveryOptions::default())
            .unwrap();
        let mut reports: Vec<BatchReport> = Vec::new();
        while let Some(report) = handle.reports.recv().await {
            reports.push(report);
        }
        handle.finished().await.unwrap();
        reports
    });

    assert_eq!(reports.len(), 50);
    let first = reports[0].time_ms;
    for (k, report) in reports.iter().enumerate() {
        assert_eq!(
            report.time_ms,
            first + 20 * k as i64,
            "batch {} has time {} ms: a batch time was skipped or repeated",
            report.number,
            report.time_ms
        );
    }
    let (early, late) = (&reports[5], &reports[45]);
    assert!(
        late.scheduling_delay > early.scheduling_delay && early.queued > 0,
        "a job computing 100 ms batches every 20 ms falls behind: delay {:?} -> {:?}, {} batches queued behind batch 6",
        early.scheduling_delay,
        late.scheduling_delay,
        early.queued,
    );
}

/// 50 batches at a 20 ms interval while writing each cut to the write-ahead log takes 3
/// intervals (a slow disk, injected through `SLUICE_FAULT_SLOW_LOG_CUT_MS`).
#[test]
fn batch_times_stay_consecutive_while_the_log_is_slow() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("job.toml");
    std::fs::write(
        &manifest,
        r#"name = "slow-log"
batch_interval = "20ms"

[checkpoint]
dir = "checkpoint"

[[sources]]
name = "numbers"
kind = "generator"
rate = 1000

[[streams]]
name = "counted"
from = "numbers"
steps = [{ op = "count" }]

[[sinks]]
from = "counted"
kind = "collect"
name = "out"
"#,
    )
    .unwrap();
    let run = Run::start_with_env(
        &manifest,
        &["--batches", "50"],
        &[("SLUICE_FAULT_SLOW_LOG_CUT_MS", "60")],
    );
    let (status, log) = run.finish();
    assert!(status.success(), "{log:#?}");
    let reports: Vec<&Json> = log
        .iter()
        .filter(|line| message_of(line) == "batch done")
        .collect();
    assert_eq!(reports.len(), 50, "{log:#?}");
    let field = |report: &Json, name: &str| report["fields"][name].as_i64().unwrap();
    let first = field(reports[0], "time_ms");
    for (k, report) in reports.iter().enumerate() {
        assert_eq!(
            field(report, "time_ms"),
            first + 20 * k as i64,
            "batch {} has a skipped or repeated time",
            field(report, "batch")
        );
    }
    let delay = |k: usize| field(reports[k], "scheduling_delay_ms");
    assert!(
        delay(45) > delay(5) + 500,
        "cuts that take 60 ms every 20 ms fall behind: scheduling delay {} ms at batch 6, {} ms at batch 46",
        delay(5),
        delay(45)
    );
}
