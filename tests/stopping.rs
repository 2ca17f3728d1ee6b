//! Stopping a job of the library `Host`: a stop whose batch in flight does not finish
//! (its guest loops or sleeps) turns into a forced stop 2 s later, a forced stop ends the
//! job at once, and the batch it abandoned is re-run from the log at the next start.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::wordcount::{counted, final_counts, slow_input, slow_word_count};
use sluice::batcher::StopReason;
use sluice::host::{Host, JobHandle, STOP_GRACE};
use sluice::runtime::RuntimeConfig;
use sluice::tenancy::HostConfig;

/// A job of its own tenant on a generator source (its receiver keeps running) whose first
/// record takes about 20 ms of CPU (`faulty#burn`), then a call of `udf` (a `faulty`
/// function of an integer) that never returns by itself.
fn stuck_job(dir: &Path, name: &str, udf: &str) -> std::path::PathBuf {
    let manifest = format!(
        "name = \"{name}\"\ntenant = \"{name}\"\nbatch_interval = \"100ms\"\npartitions = 1\n\
         [limits]\ncall_timeout = \"1h\"\n[udfs]\nf = \"{}\"\n\
         [[sources]]\nname = \"in\"\nkind = \"generator\"\nrate = 10\n\
         [[streams]]\nname = \"out\"\nfrom = \"in\"\nsteps = [{{ op = \"map\", udf = \"f#burn\" }}, {{ op = \"map\", udf = \"f#{udf}\" }}]\n\
         [[sinks]]\nfrom = \"out\"\nkind = \"collect\"\n",
        common::udf("faulty").display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, manifest).unwrap();
    path
}

fn host() -> Host {
    let config =
        HostConfig::parse("[[tenants]]\nname = \"spin\"\n[[tenants]]\nname = \"nap\"\n").unwrap();
    Host::new(RuntimeConfig::with_host(config)).unwrap()
}

/// Starts the stuck job and waits until its batch is stuck: its tenant has used the CPU
/// that burning through its first record takes.
fn start_stuck(host: &Host, dir: &Path, name: &str) -> JobHandle {
    let job = host.load(&stuck_job(dir, name, name)).unwrap();
    let handle = host.start(job, None, &Default::default()).unwrap();
    let gate = host.runtime().scheduler().gate();
    let tenant = gate.find(name).unwrap();
    common::wait::until(Duration::from_secs(30), "the guest call to run", || {
        gate.used(tenant) >= Duration::from_millis(10)
    });
    handle
}

/// Stops `handle` the way `stop` does and says how long the job took to end.
async fn ended_after(handle: JobHandle, stop: impl FnOnce(&JobHandle)) -> Duration {
    let asked = Instant::now();
    stop(&handle);
    let summary = handle
        .finished()
        .await
        .expect("a stopped job is no failure");
    let took = asked.elapsed();
    assert_eq!(summary.reason, StopReason::Forced);
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_stop_ends_a_looping_or_sleeping_job_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let host = host();
    for name in ["spin", "nap"] {
        let handle = tokio::task::block_in_place(|| start_stuck(&host, dir.path(), name));
        let took = ended_after(handle, JobHandle::force_stop).await;
        eprintln!("forced stop of the {name} job: ended {took:?} after force_stop()");
        assert!(took < Duration::from_secs(3), "{name}: {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_stop_cuts_short_a_long_host_step() {
    let dir = tempfile::tempdir().unwrap();
    let config = HostConfig::parse(
        "[[tenants]]\nname = \"big\"\nmax_call_output_records = 40000000\n\
         max_batch_records = 40000000\n",
    )
    .unwrap();
    let host = Host::new(RuntimeConfig::with_host(config)).unwrap();
    // Four records (one a partition) turn into 40 M, counted by value on the host: seconds of host work.
    let manifest = format!(
        "name = \"big\"\ntenant = \"big\"\nbatch_interval = \"100ms\"\npartitions = 4\n\
         [udfs]\nf = \"{}\"\n[[sources]]\nname = \"in\"\nkind = \"queue\"\nbatches = [[1, 2, 3, 4]]\n\
         [[streams]]\nname = \"out\"\nfrom = \"in\"\n\
         steps = [{{ op = \"flat_map\", udf = \"f#explode\" }}, {{ op = \"count_by_value\" }}]\n\
         [[sinks]]\nfrom = \"out\"\nkind = \"collect\"\n",
        common::udf("faulty").display()
    );
    let path = dir.path().join("big.toml");
    std::fs::write(&path, manifest).unwrap();
    let job = tokio::task::block_in_place(|| host.load(&path)).unwrap();
    let collected = job.collected().clone();
    let handle = host.start(job, None, &Default::default()).unwrap();
    // The job's host work has used a few slices: it is counting.
    let gate = host.runtime().scheduler().host_gate().clone();
    let tenant = gate.find("big").unwrap();
    tokio::task::block_in_place(|| {
        common::wait::until(Duration::from_secs(60), "the host work to run", || {
            gate.used(tenant) >= Duration::from_millis(50)
        })
    });
    let took = ended_after(handle, JobHandle::force_stop).await;
    eprintln!("forced stop during a long host step: ended {took:?} after force_stop()");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(
        collected.batches("out").is_empty(),
        "the abandoned batch wrote nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_whose_batch_does_not_finish_is_forced_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let host = host();
    for name in ["spin", "nap"] {
        let handle = tokio::task::block_in_place(|| start_stuck(&host, dir.path(), name));
        let took = ended_after(handle, JobHandle::stop).await;
        eprintln!("stop of the {name} job: ended {took:?} after stop()");
        assert!(
            took >= STOP_GRACE && took < STOP_GRACE + Duration::from_secs(1),
            "{name}: {took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_forced_stop_mid_batch_gives_exact_totals() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = slow_word_count(dir.path(), "forced");
    let host = Host::new(RuntimeConfig::default()).unwrap();
    let job = tokio::task::block_in_place(|| host.load(&manifest)).unwrap();
    let mut handle = host.start(job, None, &Default::default()).unwrap();
    // Batches take 50 ms and are cut every 20 ms: after two, one is always in flight.
    let mut last = 0;
    for _ in 0..2 {
        last = handle.reports.recv().await.unwrap().number;
    }
    // Its guest call has run for an epoch tick: the stop lands mid-batch.
    let gate = host.runtime().scheduler().gate();
    let tenant = gate.find("default").unwrap();
    let before = gate.used(tenant);
    common::wait::until(Duration::from_secs(10), "the next batch to run", || {
        gate.used(tenant) > before
    });
    let asked = Instant::now();
    handle.force_stop();
    while let Some(report) = handle.reports.recv().await {
        last = report.number;
    }
    let summary = handle.finished().await.unwrap();
    eprintln!(
        "forced stop mid-batch: ended {:?} after force_stop()",
        asked.elapsed()
    );
    assert_eq!(summary.reason, StopReason::Forced, "{summary:?}");
    assert!(
        summary.checkpoint.is_none(),
        "an abandoned batch's state is never saved"
    );

    let job = tokio::task::block_in_place(|| host.load(&manifest)).unwrap();
    let mut restart = host.start(job, None, &Default::default()).unwrap();
    let mut replayed = Vec::new();
    while let Some(report) = restart.reports.recv().await {
        if report.replayed {
            replayed.push(report.number);
        }
    }
    assert!(
        replayed.contains(&(last + 1)),
        "batch {} was abandoned and is re-run: {replayed:?}",
        last + 1
    );
    let summary = restart.finished().await.unwrap();
    assert_eq!(summary.reason, StopReason::Drained);
    assert_eq!(final_counts(dir.path()).0, counted(&slow_input()));
}
