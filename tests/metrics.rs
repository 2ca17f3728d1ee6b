//! Prometheus metrics of `sluice run --ui`, checked with a real Prometheus (the Debian
//! package, through scripts/prometheus) and against Prometheus' naming conventions.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::observe::{Prometheus, get, get_json, ui_address};
use common::run::Run;
use common::wait;

/// A job of `batches`-record batches every 50 ms: a generator's numbers, through a UDF
/// (so that per-step UDF families have samples) and a windowed count (a stateful step).
fn job(dir: &Path, name: &str) -> PathBuf {
    let manifest = dir.join(format!("{name}.toml"));
    std::fs::write(
        &manifest,
        format!(
            r#"name = "{name}"
batch_interval = "50ms"

[checkpoint]
dir = "checkpoint-{name}"
every = 2

[[sources]]
name = "numbers"
kind = "generator"
rate = 2000

[[streams]]
name = "counted"
from = "numbers"
steps = [
  {{ op = "map", udf = "{udf}#chatty" }},
  {{ op = "count_by_value_and_window", window = "200ms", slide = "50ms" }},
]

[[sinks]]
from = "counted"
kind = "collect"
name = "out"
"#,
            udf = common::udf("faulty").display()
        ),
    )
    .unwrap();
    manifest
}

#[test]
fn prometheus_scrapes_a_running_job_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = Run::start(&job(dir.path(), "scraped"), &["--ui", "127.0.0.1:0"]);
    let address = ui_address(&mut run);
    let prometheus = Prometheus::start(&[&address]);
    let up = wait::within(Duration::from_secs(60), || {
        prometheus.query("up{job=\"sluice\"}") == [(up_labels(&address), 1.0)]
            && !prometheus
                .query("sluice_batches_total{job_name=\"scraped\"}")
                .is_empty()
    });
    let targets = prometheus.targets();
    assert!(up, "Prometheus never saw the job up: {targets:#?}");
    assert_eq!(targets.len(), 1, "{targets:#?}");
    assert_eq!(targets[0]["health"], "up", "{targets:#?}");
    assert_eq!(targets[0]["lastError"], "", "{targets:#?}");
    let batches = prometheus.query("sluice_batches_total{job_name=\"scraped\"}");
    assert!(batches[0].1 >= 1.0, "{batches:?}");
    let calls = prometheus.query("sluice_udf_calls_total{job_name=\"scraped\"}");
    let calls: Vec<(&str, f64)> = calls
        .iter()
        .map(|(labels, value)| (labels["step"].as_str().unwrap(), *value))
        .collect();
    assert_eq!(calls.len(), 2, "one sample per step: {calls:?}");
    assert!(
        calls.contains(&("counted/2", 0.0))
            && calls
                .iter()
                .any(|(step, calls)| *step == "counted/1" && *calls >= 1.0),
        "the map step calls its UDF, count_by_value has none: {calls:?}"
    );
    run.signal("TERM");
    let (status, log) = run.finish();
    assert!(status.success(), "{log:#?}");
}

/// The labels Prometheus gives `up` of the one target at `address`.
fn up_labels(address: &str) -> serde_json::Value {
    serde_json::json!({"__name__": "up", "instance": address, "job": "sluice"})
}

#[test]
fn a_bounded_job_lingers_and_prometheus_reads_its_exact_batch_count() {
    const BATCHES: u64 = 7;
    let dir = tempfile::tempdir().unwrap();
    let mut run = Run::start(
        &job(dir.path(), "bounded"),
        &[
            "--ui",
            "127.0.0.1:0",
            "--batches",
            &BATCHES.to_string(),
            "--ui-linger",
        ],
    );
    let address = ui_address(&mut run);
    let summary = run.wait_for("summary: ");
    assert_eq!(summary["fields"]["batches"], BATCHES, "{summary}");
    run.wait_for("stay up until SIGTERM");
    let prometheus = Prometheus::start(&[&address]);
    let mut batches = Vec::new();
    let scraped = wait::within(Duration::from_secs(60), || {
        batches = prometheus.query("sluice_batches_total{job_name=\"bounded\"}");
        !batches.is_empty()
    });
    assert!(scraped, "Prometheus never got the job's batches");
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(batches[0].1, BATCHES as f64, "{batches:?}");
    let up = prometheus.query("sluice_job_up{job_name=\"bounded\"}");
    assert_eq!(up[0].1, 0.0, "the job has ended: {up:?}");
    run.signal("TERM");
    let (status, log) = run.finish();
    assert!(status.success(), "{log:#?}");
}

/// Every family the issue asks for, with its type.
const FAMILIES: [(&str, &str); 24] = [
    ("sluice_job_up", "gauge"),
    ("sluice_batches", "counter"),
    ("sluice_records_in", "counter"),
    ("sluice_records_out", "counter"),
    ("sluice_records_skipped", "counter"),
    ("sluice_late_rows_dropped", "counter"),
    ("sluice_batches_queued", "gauge"),
    ("sluice_checkpoints", "counter"),
    ("sluice_checkpoint_write_seconds", "counter"),
    ("sluice_checkpoint_written_bytes", "counter"),
    ("sluice_batch_processing_seconds", "histogram"),
    ("sluice_scheduling_delay_seconds", "histogram"),
    ("sluice_source_records_in", "counter"),
    ("sluice_step_records_out", "counter"),
    ("sluice_step_processing_seconds", "counter"),
    ("sluice_udf_calls", "counter"),
    ("sluice_udf_failures", "counter"),
    ("sluice_udf_call_seconds", "counter"),
    ("sluice_udf_memory_bytes", "gauge"),
    ("sluice_wal_bytes", "gauge"),
    ("sluice_receiver_buffered_records", "gauge"),
    ("sluice_state_entries", "gauge"),
    ("sluice_state_bytes", "gauge"),
    ("sluice_job_last_failure_timestamp_seconds", "gauge"),
];

/// The labels a sample may carry: identifiers, never free text or record data.
const LABELS: [&str; 6] = ["tenant", "job_name", "step", "source", "reason", "le"];

/// One family of an OpenMetrics exposition.
#[derive(Default, Debug)]
struct Family {
    kind: String,
    help: String,
    unit: Option<String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

/// Parses OpenMetrics text (as `sluice` writes it: no exemplars, no timestamps).
fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" {
            assert_eq!(lines.peek(), None, "nothing follows # EOF");
            break;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let (keyword, rest) = rest.split_once(' ').unwrap();
            let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
            let family = families.entry(name.to_owned()).or_default();
            match keyword {
                "HELP" => family.help = value.to_owned(),
                "TYPE" => family.kind = value.to_owned(),
                "UNIT" => family.unit = Some(value.to_owned()),
                other => panic!("unknown descriptor {other}: {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.strip_suffix('}').unwrap()),
            None => (series, ""),
        };
        let labels: BTreeMap<String, String> = labels
            .split("\",")
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once("=\"").unwrap();
                (key.to_owned(), value.trim_end_matches('"').to_owned())
            })
            .collect();
        let family = families
            .iter_mut()
            .filter(|(family, _)| name.starts_with(family.as_str()))
            .max_by_key(|(family, _)| family.len())
            .unwrap_or_else(|| panic!("sample {name} before its family's descriptor"))
            .1;
        family
            .samples
            .push((name.to_owned(), labels, value.parse().unwrap()));
    }
    families
}

#[test]
fn every_family_follows_prometheus_conventions() {
    let dir = tempfile::tempdir().unwrap();
    // A job that fails, so that the failure family has a sample too.
    let failing = dir.path().join("failing.toml");
    std::fs::write(
        &failing,
        format!(
            "name = \"failing\"\nbatch_interval = \"50ms\"\n[[sources]]\nname = \"n\"\nkind = \"queue\"\nbatches = [[1, 2, 3]]\n[[streams]]\nname = \"m\"\nfrom = \"n\"\nsteps = [{{ op = \"map\", udf = \"{}#panic_on_three\" }}]\n[[sinks]]\nfrom = \"m\"\nkind = \"collect\"\nname = \"out\"\n",
            common::udf("faulty").display()
        ),
    )
    .unwrap();
    let mut run = Run::start(
        &job(dir.path(), "conventions"),
        &[
            failing.to_str().unwrap(),
            "--ui",
            "127.0.0.1:0",
            "--batches",
            "6",
            "--ui-linger",
        ],
    );
    let address = ui_address(&mut run);
    run.wait_for("stay up until SIGTERM");
    let (status, content_type, text) = get(&format!("http://{address}/metrics"), &[]);
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    let families = parse(&text);
    let names: BTreeSet<&str> = families.keys().map(String::as_str).collect();
    let wanted: BTreeSet<&str> = FAMILIES.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, wanted, "the families exposed");
    for (name, kind) in FAMILIES {
        let family = &families[name];
        assert_eq!(family.kind, kind, "{name}");
        assert!(family.help.len() > 10, "{name} has a HELP text");
        assert!(
            name.starts_with("sluice_")
                && name
                    .bytes()
                    .all(|byte| byte.is_ascii_lowercase() || byte == b'_'),
            "{name}"
        );
        // Base units only, named as the family's unit.
        for unit in ["millis", "micro", "_ms", "_us", "kilo", "mega", "minutes"] {
            assert!(!name.contains(unit), "{name} is not in a base unit");
        }
        for unit in ["seconds", "bytes"] {
            assert_eq!(
                name.ends_with(&format!("_{unit}")),
                family.unit.as_deref() == Some(unit),
                "{name}: its UNIT"
            );
        }
        // Jobs without a Kafka source that skips, or without event time, have no series
        // of what they can never count.
        let never_counted = ["sluice_records_skipped", "sluice_late_rows_dropped"];
        assert_eq!(
            family.samples.is_empty(),
            never_counted.contains(&name),
            "{name} has samples"
        );
        for (sample, labels, value) in &family.samples {
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "gauge" => &[""],
                _ => &["_sum", "_count", "_bucket"],
            };
            assert!(
                suffixes
                    .iter()
                    .any(|suffix| *sample == format!("{name}{suffix}")),
                "{sample} in {name} ({kind})"
            );
            assert!(value.is_finite() && *value >= 0.0, "{sample} {value}");
            for key in labels.keys() {
                assert!(LABELS.contains(&key.as_str()), "{sample} has label {key}");
            }
            assert!(labels["tenant"] == "default", "{sample} {labels:?}");
            if let Some(reason) = labels.get("reason") {
                assert!(
                    [
                        "udf",
                        "quota",
                        "source",
                        "sink",
                        "checkpoint",
                        "manifest",
                        "other"
                    ]
                    .contains(&reason.as_str()),
                    "{reason}"
                );
            }
        }
    }
    // Histograms span 100 µs to 60 s, per job (no step label), and count every batch.
    for name in [
        "sluice_batch_processing_seconds",
        "sluice_scheduling_delay_seconds",
    ] {
        let family = &families[name];
        let bounds: Vec<&str> = family
            .samples
            .iter()
            .filter(|(sample, labels, _)| {
                sample.ends_with("_bucket") && labels["job_name"] == "conventions"
            })
            .map(|(_, labels, _)| labels["le"].as_str())
            .collect();
        assert_eq!(bounds.first(), Some(&"0.0001"), "{name}: {bounds:?}");
        assert_eq!(
            bounds[bounds.len() - 2..],
            ["60.0", "+Inf"],
            "{name}: {bounds:?}"
        );
        let count = family
            .samples
            .iter()
            .find(|(sample, labels, _)| {
                sample.ends_with("_count") && labels["job_name"] == "conventions"
            })
            .unwrap();
        assert_eq!(count.2, 6.0, "{name}: one observation per batch");
        assert!(
            family
                .samples
                .iter()
                .all(|(_, labels, _)| !labels.contains_key("step"))
        );
    }
    // The log, and the state of the stateful step only (the window's records and their
    // bytes, counted as they come and go).
    let value = |family: &str, job: &str| -> Vec<(Option<String>, f64)> {
        families[family]
            .samples
            .iter()
            .filter(|(_, labels, _)| labels["job_name"] == job)
            .map(|(_, labels, value)| (labels.get("step").cloned(), *value))
            .collect()
    };
    let wal = value("sluice_wal_bytes", "conventions");
    assert!(wal.len() == 1 && wal[0].1 > 0.0, "{wal:?}");
    assert_eq!(value("sluice_wal_bytes", "failing"), [(None, 0.0)]);
    for family in ["sluice_state_entries", "sluice_state_bytes"] {
        let state = value(family, "conventions");
        assert_eq!(state.len(), 1, "{family}: {state:?}");
        assert_eq!(state[0].0.as_deref(), Some("counted/2"), "{family}");
        assert!(state[0].1 > 0.0, "{family}: {state:?}");
        assert_eq!(value(family, "failing"), [], "{family}: no stateful step");
    }
    let failure = &families["sluice_job_last_failure_timestamp_seconds"].samples;
    assert_eq!(failure.len(), 1, "{failure:?}");
    assert_eq!(failure[0].1["job_name"], "failing");
    assert_eq!(failure[0].1["reason"], "udf");
    // The JSON API agrees with the metrics.
    let overview = get_json(&format!("http://{address}/v1/overview"));
    let jobs = overview["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{overview}");
    assert_eq!(jobs[0]["batches"], 6);
    assert_eq!(jobs[1]["state"], "failed");
    run.signal("TERM");
    let (status, log) = run.finish();
    assert_eq!(
        status.code(),
        Some(1),
        "the failing job fails the run: {log:#?}"
    );
}

#[test]
fn a_non_loopback_ui_address_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let output = common::sluice()
        .current_dir(dir.path())
        .args(["run"])
        .arg(job(dir.path(), "exposed"))
        .args(["--ui", "0.0.0.0:0", "--batches", "1"])
        .env_remove("SLUICE_UI_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("--ui-token"),
        "{stderr}"
    );
}

#[test]
fn a_token_guards_the_metrics_and_the_ui() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = Run::start(
        &job(dir.path(), "guarded"),
        &[
            "--ui",
            "127.0.0.1:0",
            "--ui-token",
            "s3cret-token",
            "--batches",
            "2",
            "--ui-linger",
        ],
    );
    let address = ui_address(&mut run);
    run.wait_for("stay up until SIGTERM");
    let metrics = format!("http://{address}/metrics");
    assert_eq!(get(&metrics, &[]).0, 401);
    assert_eq!(get(&metrics, &[("Authorization", "Bearer wrong")]).0, 401);
    let (status, _, text) = get(&metrics, &[("Authorization", "Bearer s3cret-token")]);
    assert_eq!(status, 200);
    assert!(
        text.contains("sluice_batches_total{tenant=\"default\",job_name=\"guarded\"} 2"),
        "{text}"
    );
    let (status, _, _) = get(
        &format!("http://{address}/v1/overview"),
        &[("Cookie", "sluice_token=s3cret-token")],
    );
    assert_eq!(status, 200);
    run.signal("TERM");
    let (status, log) = run.finish();
    assert!(status.success(), "{log:#?}");
}

/// Each way a job can fail as it loads and starts is labelled by what failed, never
/// `other`: a source's file gone between its check and its start, a checkpoint directory
/// it cannot use, a tenant the host does not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_as_a_job_starts_are_labelled_by_what_failed() {
    use sluice::metrics::FailureReason;
    let dir = tempfile::tempdir().unwrap();
    let host = sluice::host::Host::new(sluice::runtime::RuntimeConfig::default()).unwrap();
    std::fs::write(dir.path().join("a-file"), "not a directory").unwrap();
    std::fs::write(dir.path().join("lines.txt"), "a b\n").unwrap();
    let job = |name: &str, top: &str, path: &str| {
        format!(
            "name = \"{name}\"\nbatch_interval = \"100ms\"\n{top}\n[udfs]\nwc = \"{}\"\n\
             [[sources]]\nname = \"lines\"\nkind = \"file\"\npath = \"{path}\"\n\
             [[streams]]\nname = \"out\"\nfrom = \"lines\"\n\
             steps = [{{ op = \"flat_map\", udf = \"wc#tokenize\" }}]\n\
             [[sinks]]\nfrom = \"out\"\nkind = \"collect\"\n",
            common::udf("wordcount").display()
        )
    };
    let cases = [
        (
            "missing",
            job("missing", "", "gone.txt"),
            FailureReason::Source,
        ),
        (
            "locked",
            job("locked", "[checkpoint]\ndir = \"a-file\"", "lines.txt"),
            FailureReason::Checkpoint,
        ),
        (
            "stranger",
            job("stranger", "tenant = \"nobody\"", "lines.txt"),
            FailureReason::Manifest,
        ),
    ];
    for (name, manifest, reason) in cases {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, manifest).unwrap();
        std::fs::write(dir.path().join("gone.txt"), "a b\n").unwrap();
        let started = tokio::task::block_in_place(|| {
            let job = host.load(&path)?;
            std::fs::remove_file(dir.path().join("gone.txt")).unwrap();
            host.start(job, None, &Default::default())
        });
        let error = match started {
            Ok(handle) => handle.finished().await.expect_err(name),
            Err(error) => error,
        };
        assert_eq!(FailureReason::of(&error), reason, "{name}: {error:#}");
    }
}
