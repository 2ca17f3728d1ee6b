//! Map-side combining (issue 14): a chain of one component's map, flat_map and filter
//! steps followed by its reduce_by_key or combine_by_key runs as one step that combines
//! by key inside the guest, with the results of the steps run one by one.

mod common;

use std::path::Path;
use std::sync::Arc;

use serde_json::Value as Json;

/// What a job's run gave: its `out` sink's batches, sorted within each batch (keyed
/// output has no set order), and its steps' ids.
struct Ran {
    batches: Vec<Vec<String>>,
    steps: Vec<String>,
}

/// Runs the job `text` in one host until its sources are drained.
fn run(text: &str) -> Result<Ran, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.toml");
    std::fs::write(&path, text).unwrap();
    let tokio = tokio::runtime::Runtime::new().unwrap();
    tokio.block_on(async {
        let host = sluice::host::Host::new(sluice::runtime::RuntimeConfig {
            cache_dir: None,
            ..Default::default()
        })
        .unwrap();
        let job = Arc::new(host.load(&path).map_err(|error| format!("{error:#}"))?);
        let steps = job
            .step_meters()
            .into_iter()
            .map(|(id, _)| id.to_owned())
            .collect();
        let receivers = sluice::receivers::Receivers::start(&job.config().sources).unwrap();
        let options = sluice::batcher::RunOptions {
            max_batches: None,
            stop: Default::default(),
            phase: Default::default(),
        };
        sluice::batcher::run(job.clone(), receivers, None, options, |_| {})
            .await
            .map_err(|error| format!("{error:#}"))?;
        let batches = job
            .collected()
            .batches("out")
            .into_iter()
            .map(|(_, records)| {
                let mut shown: Vec<String> = records.iter().map(|r| r.to_json()).collect();
                shown.sort();
                shown
            })
            .collect();
        Ok(Ran { batches, steps })
    })
}

fn job(name: &str, fuse: bool, udfs: &str, source: &str, steps: &str) -> String {
    format!(
        "name = \"{name}\"\nbatch_interval = \"20ms\"\npartitions = 3\nfuse = {fuse}\n[udfs]\n{udfs}\n\
         [[sources]]\nname = \"in\"\nkind = \"queue\"\n{source}\n\
         [[streams]]\nname = \"s\"\nfrom = \"in\"\nsteps = [{steps}]\n\
         [[sinks]]\nname = \"out\"\nfrom = \"s\"\nkind = \"collect\"\n"
    )
}

/// Runs `steps` with fusion on and off and checks both give the same (non-empty) output;
/// returns it with the number of steps each way.
fn both_ways(
    name: &str,
    udfs: &str,
    source: &str,
    steps: &str,
) -> (Vec<Vec<String>>, usize, usize) {
    let fused = run(&job(name, true, udfs, source, steps)).unwrap();
    let alone = run(&job(name, false, udfs, source, steps)).unwrap();
    assert_eq!(
        fused.batches, alone.batches,
        "combining inside the guest changes no result"
    );
    assert!(
        fused.batches.iter().any(|batch| !batch.is_empty()),
        "the job made output"
    );
    (fused.batches, fused.steps.len(), alone.steps.len())
}

#[test]
fn a_chain_then_reduce_by_key_combines_in_the_guest_with_the_same_results() {
    let udfs = format!("c = \"{}\"", common::udf("conformance").display());
    // 3 partitions of 16384-record chunks: a batch of 90k numbers spans several chunks per
    // partition, so the guest's table lives across calls, and holds enough keys (33-38k a
    // partition) to be folded into region by region.
    let numbers: Vec<String> = (0..90_000)
        .map(|n| (n * 7919 % 45_007).to_string())
        .collect();
    let source = format!("batches = [[{}], [1, 2, 3], []]", numbers.join(", "));
    let steps = "{ op = \"flat_map\", udf = \"c#self_and_double\" }, \
                 { op = \"filter\", udf = \"c#is_even\" }, \
                 { op = \"map\", udf = \"c#pair_with_one\" }, \
                 { op = \"reduce_by_key\", udf = \"c#sum\" }";
    let (batches, fused_steps, alone_steps) = both_ways("evens", &udfs, &source, steps);
    assert_eq!(
        (fused_steps, alone_steps),
        (1, 4),
        "one combined step, or four"
    );
    // 1, 2, 3: doubles 2, 4, 6 and the evens among themselves (2) are kept.
    assert_eq!(batches[1], ["[2,2]", "[4,1]", "[6,1]"]);
    let total: i64 = batches[0]
        .iter()
        .map(|pair| {
            serde_json::from_str::<Json>(pair).unwrap()[1]
                .as_i64()
                .unwrap()
        })
        .sum();
    let evens = numbers
        .iter()
        .filter(|n| n.parse::<i64>().unwrap() % 2 == 0);
    assert_eq!(total, (numbers.len() + evens.count()) as i64);
}

#[test]
fn a_chain_then_combine_by_key_combines_in_the_guest_with_the_same_results() {
    let udfs = format!("tx = \"{}\"", common::udf("transactions").display());
    let lines: Vec<String> = (0..9_000)
        .map(|n| {
            let line = format!("{n},2024-03-01,ACC-{},{}.25,coffee", n % 37, n % 101);
            // Every 50th line does not parse, and is dropped by `parsed`.
            let line = if n % 50 == 0 {
                format!("x{line}")
            } else {
                line
            };
            format!("\"{line}\"")
        })
        .collect();
    let source = format!("batches = [[{}], []]", lines.join(", "));
    let steps = "{ op = \"map\", udf = \"tx#parse\" }, \
                 { op = \"flat_map\", udf = \"tx#parsed\" }, \
                 { op = \"map\", udf = \"tx#amount_by_account\" }, \
                 { op = \"combine_by_key\", create = \"tx#average_of\", \
                   merge_value = \"tx#add_to_average\", merge_combiners = \"tx#merge_averages\" }, \
                 { op = \"map_values\", udf = \"tx#mean\" }";
    let (batches, fused_steps, alone_steps) = both_ways("averages", &udfs, &source, steps);
    assert_eq!(
        (fused_steps, alone_steps),
        (2, 5),
        "combined and map_values, or five"
    );
    assert_eq!(batches[0].len(), 37, "one mean per account");
}

#[test]
fn a_failure_inside_a_combining_call_names_the_step_and_the_record() {
    let udfs = format!("c = \"{}\"", common::udf("conformance").display());
    let numbers: Vec<String> = (0..20_000).map(|n| n.to_string()).collect();
    // Record 16500 of the only partition is in its second chunk (of 16384 records).
    let mut records = numbers.clone();
    records[16_500] = "\"not a number\"".into();
    let source = format!("batches = [[{}]]", records.join(", "));
    let steps = "{ op = \"flat_map\", udf = \"c#self_and_double\" }, \
                 { op = \"map\", udf = \"c#pair_with_one\" }, \
                 { op = \"reduce_by_key\", udf = \"c#sum\" }";
    let text = job("bad", true, &udfs, &source, steps).replace("partitions = 3", "partitions = 1");
    let error = run(&text).err().expect("the job fails");
    assert!(error.contains("stream `s` step 1 (combined"), "{error}");
    assert!(error.contains("self_and_double"), "{error}");
    assert!(error.contains("\"not a number\""), "{error}");
    assert!(error.contains("(record 16500 of its partition)"), "{error}");
}

/// A component built against `sluice:udf@0.1.0` (before the `combine` export), checked in.
fn component_of_0_1_0() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/udf-0.1.0/wordcount.wasm")
}

#[test]
fn a_component_built_for_udf_0_1_0_runs_unchanged_without_combining() {
    let runtime = sluice::runtime::Runtime::new(sluice::runtime::RuntimeConfig {
        cache_dir: None,
        ..Default::default()
    })
    .unwrap();
    let old = runtime.load(&component_of_0_1_0()).unwrap();
    assert!(!old.combines(), "0.1.0 has no combine export");
    assert!(runtime.load(&common::udf("wordcount")).unwrap().combines());

    let steps = "{ op = \"flat_map\", udf = \"wc#tokenize\" }, \
                 { op = \"map\", udf = \"wc#with_one\" }, \
                 { op = \"reduce_by_key\", udf = \"wc#sum\" }";
    let source = "batches = [[\"The river, the gate\", \"a river\"], [\"gate\"]]";
    let words = |component: &Path| {
        let udfs = format!("wc = \"{}\"", component.display());
        run(&job("words", true, &udfs, source, steps)).unwrap()
    };
    let old = words(&component_of_0_1_0());
    assert_eq!(
        old.steps.len(),
        2,
        "fused chain, then reduce_by_key on the host"
    );
    assert_eq!(
        old.batches,
        [
            vec!["[\"a\",1]", "[\"gate\",1]", "[\"river\",2]", "[\"the\",2]"],
            vec!["[\"gate\",1]"],
        ]
    );
    let new = words(&common::udf("wordcount"));
    assert_eq!(new.steps.len(), 1, "combined in the guest");
    assert_eq!(new.batches, old.batches);
}
