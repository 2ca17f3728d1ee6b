//! Every tenant quota, exceeded, fails the job that went over it with an error naming the
//! quota and its value, leaves its tenant holding nothing afterwards, and changes nothing
//! for a neighbour job of another tenant, whose results stay exact.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice::host::Host;
use sluice::metrics::FailureReason;
use sluice::runtime::RuntimeConfig;
use sluice::tenancy::HostConfig;

/// One quota to go over: the tenant's quota line, the job's settings, source and steps
/// (and extra streams), and what its error must say.
struct Case {
    quota: &'static str,
    top: &'static str,
    source: String,
    steps: &'static str,
    extra: String,
    says: &'static str,
}

fn case(quota: &'static str, top: &'static str, steps: &'static str, says: &'static str) -> Case {
    Case {
        quota,
        top,
        source: ONE_RECORD.to_owned(),
        steps,
        extra: String::new(),
        says,
    }
}

const ONE_RECORD: &str = "kind = \"queue\"\nbatches = [[1]]";
const ADD_10: &str = "{ op = \"map\", udf = \"c#add_10\" }";

fn cases() -> Vec<(&'static str, Case)> {
    let four_streams = (0..3)
        .map(|i| format!("[[streams]]\nname = \"s{i}\"\nfrom = \"in\"\nsteps = [{ADD_10}]\n"))
        .collect();
    let ten_records = "kind = \"queue\"\nbatches = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]".to_owned();
    let big = format!("\"{}\"", "x".repeat(200_000));
    let two_megabytes = format!(
        "kind = \"queue\"\nbatches = [[{}]]",
        vec![big; 10].join(", ")
    );
    vec![
        (
            "max_instances",
            Case {
                extra: four_streams,
                ..case("max_instances = 2", "", ADD_10, "`max_instances` = 2")
            },
        ),
        (
            "memory_per_instance",
            case(
                "memory_per_instance = \"32MiB\"",
                "[limits]\nmemory = \"64MiB\"",
                ADD_10,
                "`memory_per_instance` is 32 MiB",
            ),
        ),
        (
            "memory_total",
            case(
                "memory_total = \"48MiB\"",
                "[limits]\nmemory = \"64MiB\"\ncall_timeout = \"10s\"",
                "{ op = \"map\", udf = \"f#hog\" }",
                "quota `memory_total` of 48 MiB",
            ),
        ),
        (
            "max_call_timeout",
            case(
                "max_call_timeout = \"1s\"",
                "[limits]\ncall_timeout = \"2s\"",
                ADD_10,
                "`max_call_timeout` is 1000 ms",
            ),
        ),
        (
            "max_partitions",
            case(
                "max_partitions = 1",
                "partitions = 2",
                ADD_10,
                "`max_partitions` is 1",
            ),
        ),
        (
            "max_call_output_records",
            case(
                "max_call_output_records = 1000",
                "",
                "{ op = \"flat_map\", udf = \"f#explode\" }",
                "`max_call_output_records` of 1000 per call",
            ),
        ),
        (
            "max_call_output_bytes",
            case(
                "max_call_output_records = 20000000\nmax_call_output_bytes = \"1MiB\"",
                "",
                "{ op = \"flat_map\", udf = \"f#explode\" }",
                "`max_call_output_bytes` of 1 MiB per call",
            ),
        ),
        (
            "max_batch_records",
            Case {
                source: ten_records,
                ..case(
                    "max_batch_records = 5",
                    "",
                    ADD_10,
                    "quota `max_batch_records` of 5",
                )
            },
        ),
        (
            "max_host_bytes",
            Case {
                source: two_megabytes,
                ..case(
                    "max_host_bytes = \"1MiB\"",
                    "",
                    "{ op = \"count_by_value\" }",
                    "`max_host_bytes` is 1048576 bytes (1.0 MiB)",
                )
            },
        ),
    ]
}

fn manifest(name: &str, tenant: &str, top: &str, source: &str, steps: &str) -> String {
    format!(
        "name = \"{name}\"\ntenant = \"{tenant}\"\nbatch_interval = \"100ms\"\n{top}\n[udfs]\n\
         f = \"{}\"\nc = \"{}\"\n[[sources]]\nname = \"in\"\n{source}\n[[streams]]\n\
         name = \"out\"\nfrom = \"in\"\nsteps = [{steps}]\n[[sinks]]\nname = \"out\"\nfrom = \"out\"\n\
         kind = \"collect\"\n",
        common::udf("faulty").display(),
        common::udf("conformance").display(),
    )
}

/// Loads and runs `manifest` to its end: the error of its load or run, if any, which
/// must be a quota's as the metrics' `reason` label tells it.
async fn run_once(host: &Host, dir: &Path, name: &str, manifest: &str) -> Option<String> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, manifest).unwrap();
    let started = tokio::task::block_in_place(|| {
        let job = host.load(&path)?;
        host.start(job, None, &Default::default())
    });
    match started {
        Ok(handle) => handle.finished().await.err(),
        Err(error) => Some(error),
    }
    .map(|error| {
        assert_eq!(FailureReason::of(&error), FailureReason::Quota, "{error:#}");
        format!("{error:#}")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_quota_exceeded_gives_its_own_error_and_changes_nothing_else() {
    let cases = cases();
    let mut config = String::from("[[tenants]]\nname = \"neighbour\"\n");
    for (tenant, case) in &cases {
        config += &format!("[[tenants]]\nname = \"{tenant}\"\n{}\n", case.quota);
    }
    let host = Arc::new(
        Host::new(RuntimeConfig::with_host(
            HostConfig::parse(&config).unwrap(),
        ))
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let neighbour = manifest(
        "neighbour",
        "neighbour",
        "partitions = 2",
        "kind = \"generator\"\nrate = 200",
        ADD_10,
    );
    let path = dir.path().join("neighbour.toml");
    std::fs::write(&path, neighbour).unwrap();
    let job = host.load(&path).unwrap();
    let collected = job.collected().clone();
    let mut neighbour = host.start(job, None, &Default::default()).unwrap();
    neighbour.reports.recv().await.expect("the neighbour runs");

    let tenancy = host.runtime().tenancy();
    for (tenant, case) in &cases {
        let job = manifest(tenant, tenant, case.top, &case.source, case.steps) + &case.extra;
        let error = run_once(&host, dir.path(), tenant, &job)
            .await
            .unwrap_or_else(|| panic!("the job over `{tenant}` ran to its end"));
        assert!(
            error.contains(case.says),
            "the job over `{tenant}` must say `{}`, said: {error}",
            case.says
        );
        for (other, _) in cases.iter().filter(|(other, _)| other != tenant) {
            assert!(
                !error.contains(&format!("`{other}`")),
                "the job over `{tenant}` names `{other}` too: {error}"
            );
        }
        let account = tenancy.account(tenant).unwrap();
        assert_eq!(
            (account.instances(), account.memory(), account.host_bytes()),
            (0, 0, 0),
            "tenant `{tenant}` holds nothing once its job has failed"
        );
        // The neighbour computed batches meanwhile.
        let report = neighbour
            .reports
            .recv()
            .await
            .expect("the neighbour runs on");
        assert_eq!(&*report.tenant, "neighbour");
        eprintln!("{tenant}: {error}");
    }

    neighbour.stop();
    neighbour.finished().await.expect("the neighbour ends well");
    let values: Vec<i64> = collected
        .batches("out")
        .into_iter()
        .flat_map(|(_, records)| records)
        .map(|value| value.to_json().parse().unwrap())
        .collect();
    let expected: Vec<i64> = (10..10 + values.len() as i64).collect();
    assert!(values.len() >= 20, "{} records", values.len());
    assert_eq!(
        values, expected,
        "the neighbour's records are every generated integer plus 10, in order"
    );
}

/// A receiver that buffers more than its tenant's `max_host_bytes` before a cut fails its
/// job with the quota's error (naming the receiver buffers, not the batch that would
/// follow), and the neighbour of another tenant runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receiver_buffers_count_against_max_host_bytes() {
    let config = "[[tenants]]\nname = \"neighbour\"\n[[tenants]]\nname = \"flood\"\n\
                  max_host_bytes = \"256KiB\"\n";
    let host = Host::new(RuntimeConfig::with_host(HostConfig::parse(config).unwrap())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let generator = |rate: u32| format!("kind = \"generator\"\nrate = {rate}");
    let path = dir.path().join("neighbour.toml");
    let neighbour = manifest("neighbour", "neighbour", "", &generator(200), ADD_10);
    std::fs::write(&path, neighbour).unwrap();
    let job = host.load(&path).unwrap();
    let mut neighbour = host.start(job, None, &Default::default()).unwrap();
    neighbour.reports.recv().await.expect("the neighbour runs");

    // 10,000 records every 10 ms: about 90 KiB a tick, 900 KiB by the first cut.
    let flood = manifest("flood", "flood", "", &generator(1_000_000), ADD_10);
    let error = run_once(&host, dir.path(), "flood", &flood)
        .await
        .expect("the flood ran on");
    assert!(
        error.contains("`max_host_bytes` is 262144 bytes")
            && error.contains("this job's receiver buffers"),
        "{error}"
    );
    common::wait_for_host_bytes_released(&host, "flood", "the failed job's buffers to go");
    let report = neighbour
        .reports
        .recv()
        .await
        .expect("the neighbour runs on");
    assert_eq!(&*report.tenant, "neighbour");
    neighbour.stop();
    neighbour.finished().await.expect("the neighbour ends well");
}

/// The write-ahead log a job keeps counts against its tenant's `max_host_bytes` until a
/// state checkpoint lets it go: a job that checkpoints rarely fails with the quota's error
/// once its log fills the quota (its batches alone hold a tenth of it), while the same job
/// checkpointing every batch runs on within the quota with twice as many records logged as
/// the first one had when it failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_retained_write_ahead_log_counts_against_max_host_bytes_until_a_checkpoint() {
    const QUOTA: u64 = 256 * 1024;
    let config = "[[tenants]]\nname = \"logging\"\nmax_host_bytes = \"256KiB\"\n";
    let host = Host::new(RuntimeConfig::with_host(HostConfig::parse(config).unwrap())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // 2,000 records a batch: about 20 KiB of log, and as much in a batch in flight.
    let generator = "kind = \"generator\"\nrate = 20000";
    let start = |name: &str, every: u32| {
        let manifest = manifest(name, "logging", "", generator, ADD_10)
            + &format!(
                "[checkpoint]\ndir = \"{}\"\nevery = {every}\nfsync = \"never\"\n",
                dir.path().join(name).display()
            );
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, manifest).unwrap();
        let job = host.load(&path).unwrap();
        host.start(job, None, &Default::default()).unwrap()
    };
    let mut rare = start("rare", 1000);
    let mut logged_by_rare = 0;
    let ran = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(report) = rare.reports.recv().await {
            logged_by_rare += report.stats.records_in;
        }
    })
    .await;
    assert!(
        ran.is_ok(),
        "the job whose log is never let go ran on for a minute"
    );
    let error = rare
        .finished()
        .await
        .expect_err("the job over the quota failed");
    assert_eq!(FailureReason::of(&error), FailureReason::Quota, "{error:#}");
    assert!(
        format!("{error:#}").contains("`max_host_bytes` is 262144 bytes"),
        "{error:#}"
    );
    let log = dir_bytes(&dir.path().join("rare/wal"));
    assert!(
        log > QUOTA * 3 / 4,
        "the log held {log} bytes when the job failed"
    );
    // The log goes once the job's receivers, which log what they bring, have ended too.
    common::wait_for_host_bytes_released(&host, "logging", "the failed job's log to go");

    let mut often = start("often", 1);
    let mut logged_by_often = 0;
    while logged_by_often <= 2 * logged_by_rare {
        let report = often.reports.recv().await.expect("the job runs on");
        logged_by_often += report.stats.records_in;
    }
    often.stop();
    often.finished().await.expect("the job ends well");
    assert!(dir_bytes(&dir.path().join("often/wal")) < QUOTA);
}

/// The bytes of the files in `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum()
}
