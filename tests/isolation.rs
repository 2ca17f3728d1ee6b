//! Jobs that share a host cannot hurt each other: a hostile tenant's looping, sleeping,
//! memory-hungry, recursing, flooding, exploding, panicking, deeply nesting and greedy jobs,
//! restarted as soon as they end, leave a healthy tenant's batches on time; and tenants'
//! CPU shares follow their weights.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::host::Host;
use sluice::runtime::RuntimeConfig;
use sluice::tenancy::HostConfig;

/// A job of `tenant` over the faulty (`f`), hostile (`h`) and conformance (`c`) UDFs.
fn job(name: &str, tenant: &str, top: &str, source: &str, steps: &str) -> String {
    format!(
        "name = \"{name}\"\ntenant = \"{tenant}\"\n{top}\n[udfs]\nf = \"{}\"\nh = \"{}\"\nc = \"{}\"\n\
         [[sources]]\nname = \"in\"\n{source}\n[[streams]]\nname = \"out\"\nfrom = \"in\"\n\
         steps = [{steps}]\n[[sinks]]\nfrom = \"out\"\nkind = \"collect\"\n",
        common::udf("faulty").display(),
        common::udf("hostile").display(),
        common::udf("conformance").display(),
    )
}

/// One record in one batch, then an empty batch.
const ONE_RECORD: &str = "kind = \"queue\"\nbatches = [[1], []]";

/// The tests measure time and CPU shares: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn host(config: &str) -> Arc<Host> {
    let config = HostConfig::parse(config).unwrap();
    Arc::new(Host::new(RuntimeConfig::with_host(config)).unwrap())
}

/// Loads and starts `manifest` and waits for it to end: the error of its load or run.
async fn run_once(
    host: &Host,
    dir: &std::path::Path,
    name: &str,
    manifest: &str,
) -> Option<String> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, manifest).unwrap();
    let started = tokio::task::block_in_place(|| {
        let job = host.load(&path)?;
        host.start(job, None, &Default::default())
    });
    let handle = match started {
        Ok(handle) => handle,
        Err(error) => return Some(format!("{error:#}")),
    };
    handle
        .finished()
        .await
        .err()
        .map(|error| format!("{error:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_tenant_leaves_a_healthy_tenants_batches_on_time() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let host = host(
        "[[tenants]]\nname = \"a\"\nmax_instances = 48\nmemory_total = \"1GiB\"\n\
         [[tenants]]\nname = \"b\"\nmax_instances = 8\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let one = "batch_interval = \"100ms\"\npartitions = 1";
    let timeout = "[limits]\ncall_timeout = \"1s\"\nmemory = \"64MiB\"";
    let greedy_steps = "{ op = \"map\", udf = \"c#add_10\" }";
    let greedy_streams: String = (0..60)
        .map(|i| format!("[[streams]]\nname = \"s{i}\"\nfrom = \"in\"\nsteps = [{greedy_steps}]\n"))
        .collect();
    // (name, manifest, what its error must say; None: it ends well)
    let hostile: Vec<(&str, String, Option<&str>)> = vec![
        (
            "loop",
            job(
                "loop",
                "a",
                &format!("{one}\n{timeout}"),
                ONE_RECORD,
                "{ op = \"map\", udf = \"f#spin\" }",
            ),
            Some("call timeout of 1000 ms and was stopped while running"),
        ),
        (
            "sleep",
            job(
                "sleep",
                "a",
                &format!("{one}\n{timeout}"),
                ONE_RECORD,
                "{ op = \"map\", udf = \"f#nap\" }",
            ),
            Some("stopped while blocked in a host call"),
        ),
        (
            "memory",
            job(
                "memory",
                "a",
                &format!("{one}\n{timeout}"),
                ONE_RECORD,
                "{ op = \"map\", udf = \"f#hog\" }",
            ),
            Some("`limits.memory`"),
        ),
        (
            "recursion",
            job(
                "recursion",
                "a",
                one,
                ONE_RECORD,
                "{ op = \"map\", udf = \"f#recurse\" }",
            ),
            Some("was stopped by a stack overflow"),
        ),
        (
            "flood",
            job(
                "flood",
                "a",
                one,
                ONE_RECORD,
                "{ op = \"map\", udf = \"f#flood\" }",
            ),
            None,
        ),
        (
            "explode",
            job(
                "explode",
                "a",
                one,
                ONE_RECORD,
                "{ op = \"flat_map\", udf = \"f#explode\" }",
            ),
            Some("`max_call_output_records` of 1000000"),
        ),
        (
            "panic",
            job(
                "panic",
                "a",
                one,
                "kind = \"queue\"\nbatches = [[3], []]",
                "{ op = \"map\", udf = \"f#panic_on_three\" }",
            ),
            Some("panicked"),
        ),
        (
            "nesting",
            job(
                "nesting",
                "a",
                one,
                ONE_RECORD,
                "{ op = \"map\", udf = \"h#deep_10000\" }",
            ),
            Some("nested deeper than 1000 levels"),
        ),
        (
            "greedy",
            job(
                "greedy",
                "a",
                one,
                ONE_RECORD,
                "{ op = \"map\", udf = \"c#add_10\" }",
            ) + &greedy_streams,
            Some("`max_instances` = 48"),
        ),
    ];
    let healthy = job(
        "healthy",
        "b",
        "batch_interval = \"100ms\"\npartitions = 2",
        "kind = \"generator\"\nrate = 200",
        "{ op = \"map\", udf = \"c#add_10\" }, { op = \"count\" }",
    );
    let path = dir.path().join("healthy.toml");
    std::fs::write(&path, &healthy).unwrap();
    let mut healthy = host
        .start(host.load(&path).unwrap(), None, &Default::default())
        .unwrap();
    // Let the healthy job settle before the hostile ones arrive.
    for _ in 0..5 {
        healthy.reports.recv().await.unwrap();
    }
    let until = Instant::now() + Duration::from_secs(30);
    let mut tasks = Vec::new();
    for (name, manifest, says) in hostile {
        let (host, dir) = (host.clone(), dir.path().to_owned());
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while Instant::now() < until {
                outcomes.push(run_once(&host, &dir, name, &manifest).await);
            }
            (name, says, outcomes)
        }));
    }
    let mut delays = Vec::new();
    while Instant::now() < until {
        let report = healthy
            .reports
            .recv()
            .await
            .expect("the healthy job runs on");
        delays.push(report.scheduling_delay);
    }
    healthy.stop();
    healthy.finished().await.expect("the healthy job ends well");
    for task in tasks {
        let (name, says, outcomes) = task.await.unwrap();
        assert!(!outcomes.is_empty(), "{name} ran");
        let quota = "tenant `a` holds its whole instance quota";
        for outcome in &outcomes {
            // A job may also find its tenant's quota taken by the greedy job for a moment.
            match (says, outcome) {
                (_, Some(error)) if error.contains(quota) => {}
                (None, None) => {}
                (Some(says), Some(error)) => {
                    assert!(error.contains(says), "{name} ended with: {error}")
                }
                _ => panic!("{name} ended with {outcome:?}, expected {says:?}"),
            }
        }
        if let Some(says) = says {
            assert!(
                outcomes.iter().flatten().any(|error| error.contains(says)),
                "{name}: no run ended naming its own limit: {outcomes:?}"
            );
        }
        eprintln!("{name}: {} runs", outcomes.len());
    }
    delays.sort();
    let p99 = delays[delays.len() * 99 / 100];
    let max = *delays.last().unwrap();
    eprintln!(
        "healthy: {} batches, scheduling delay p50 {:?} p99 {p99:?} max {max:?}",
        delays.len(),
        delays[delays.len() / 2]
    );
    assert!(
        delays.len() >= 250,
        "{} batches in 30 s at 100 ms",
        delays.len()
    );
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
    assert!(max < Duration::from_millis(300), "max {max:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guest_cpu_is_shared_by_tenant_weight() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let host = host(
        "[[tenants]]\nname = \"light\"\nweight = 1\n[[tenants]]\nname = \"heavy\"\nweight = 3\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let mut handles = Vec::new();
    for tenant in ["light", "heavy"] {
        for n in 0..4 {
            let name = format!("{tenant}{n}");
            let manifest = job(
                &name,
                tenant,
                "batch_interval = \"100ms\"\npartitions = 2\n[limits]\ncall_timeout = \"1h\"",
                "kind = \"generator\"\nrate = 400",
                "{ op = \"map\", udf = \"f#burn\" }",
            );
            let path = dir.path().join(format!("{name}.toml"));
            std::fs::write(&path, manifest).unwrap();
            handles.push(
                host.start(host.load(&path).unwrap(), None, &Default::default())
                    .unwrap(),
            );
        }
    }
    let scheduler = host.runtime().scheduler();
    let used = || -> BTreeMap<&str, Duration> {
        ["light", "heavy"]
            .into_iter()
            .map(|tenant| {
                let id = scheduler.gate().find(tenant).unwrap();
                (tenant, scheduler.gate().used(id))
            })
            .collect()
    };
    // Wait until every job has computed a batch: all are competing.
    for handle in &mut handles {
        handle.reports.recv().await.unwrap();
    }
    let before = used();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let after = used();
    for handle in &handles {
        handle.stop();
    }
    let light = (after["light"] - before["light"]).as_secs_f64();
    let heavy = (after["heavy"] - before["heavy"]).as_secs_f64();
    eprintln!("guest CPU over 20 s: light {light:.2} s, heavy {heavy:.2} s");
    let ratio = heavy / light;
    assert!(
        (3.0 * 0.85..=3.0 * 1.15).contains(&ratio),
        "weights 1:3 gave {light:.2} s : {heavy:.2} s (ratio {ratio:.2})"
    );
    assert!(
        light + heavy > 10.0,
        "the cores were busy: {light:.2} + {heavy:.2} s"
    );
}
