//! Host-side operator work takes turns on the fair scheduler in slices: a job whose
//! `flat_map` turns one record into 10 M records and counts them by value leaves a
//! neighbour tenant's batches on time.

mod common;

use std::time::{Duration, Instant};

use sluice::host::Host;
use sluice::runtime::RuntimeConfig;
use sluice::tenancy::HostConfig;

fn job(name: &str, tenant: &str, top: &str, source: &str, steps: &str) -> String {
    format!(
        "name = \"{name}\"\ntenant = \"{tenant}\"\n{top}\n[udfs]\nf = \"{}\"\nc = \"{}\"\n\
         [[sources]]\nname = \"in\"\n{source}\n[[streams]]\nname = \"out\"\nfrom = \"in\"\n\
         steps = [{steps}]\n[[sinks]]\nname = \"out\"\nfrom = \"out\"\nkind = \"collect\"\n",
        common::udf("faulty").display(),
        common::udf("conformance").display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counting_ten_million_records_leaves_a_neighbours_batches_on_time() {
    let config = HostConfig::parse(
        "[[tenants]]\nname = \"big\"\nmax_call_output_records = 10000000\n\
         max_batch_records = 10000000\n[[tenants]]\nname = \"neighbour\"\n",
    )
    .unwrap();
    let host = Host::new(RuntimeConfig::with_host(config)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let start = |name: &str, manifest: String| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, manifest).unwrap();
        let job = host.load(&path).unwrap();
        let collected = job.collected().clone();
        (
            host.start(job, None, &Default::default()).unwrap(),
            collected,
        )
    };
    let (mut neighbour, _) = start(
        "neighbour",
        job(
            "neighbour",
            "neighbour",
            "batch_interval = \"100ms\"\npartitions = 2",
            "kind = \"generator\"\nrate = 200",
            "{ op = \"map\", udf = \"c#add_10\" }, { op = \"count\" }",
        ),
    );
    for _ in 0..5 {
        neighbour.reports.recv().await.expect("the neighbour runs");
    }
    let (big, counted) = start(
        "big",
        job(
            "big",
            "big",
            "batch_interval = \"100ms\"\npartitions = 2",
            "kind = \"queue\"\nbatches = [[7]]",
            "{ op = \"flat_map\", udf = \"f#explode\" }, { op = \"count_by_value\" }",
        ),
    );
    let started = Instant::now();
    let big = tokio::spawn(big.finished());
    let mut delays = Vec::new();
    while !big.is_finished() {
        let report = neighbour
            .reports
            .recv()
            .await
            .expect("the neighbour runs on");
        delays.push(report.scheduling_delay);
    }
    let big_took = started.elapsed();
    big.await
        .unwrap()
        .expect("the big job counts its 10 M records");
    neighbour.stop();
    neighbour.finished().await.expect("the neighbour ends well");

    let (_, records) = counted.batches("out").pop().expect("the big job's batch");
    assert_eq!(
        records
            .iter()
            .map(|record| record.to_json())
            .collect::<Vec<_>>(),
        ["[7,10000000]"],
        "10 M copies of 7, counted"
    );
    delays.sort();
    let max = *delays.last().unwrap();
    eprintln!(
        "the big job took {big_took:?}; the neighbour's {} batches meanwhile: scheduling \
         delay p50 {:?}, max {max:?}",
        delays.len(),
        delays[delays.len() / 2]
    );
    assert!(
        delays.len() >= 5,
        "the neighbour computed {} batches in {big_took:?}",
        delays.len()
    );
    assert!(
        max < Duration::from_millis(300),
        "a neighbour batch waited {max:?} behind the big job's host work"
    );
}
