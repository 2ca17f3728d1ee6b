//! Python UDFs (issue 18): the Python guest SDK's own tests, its encoding against the Rust
//! `sluice-abi` byte for byte, Python components in jobs (a fused chain against the same
//! steps split across components, composite keys from Python, Rust and a table meeting in
//! a join, Python steps on four partitions beside a Rust job) and hostile Python stopped
//! with errors naming the step, the record and the limit. The components are built by
//! scripts/setup from udfs/python/conformance and udfs/python/testing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Serialize;
use sluice::host::Host;
use sluice::runtime::RuntimeConfig;
use sluice_abi::Value;
use sluice_abi::encoding;

/// `python3` with the SDK importable and no bytecode written into the checkout.
fn python() -> Command {
    let mut command = Command::new("python3");
    command
        .env("PYTHONPATH", common::root().join("guest-sdk/python"))
        .env("PYTHONDONTWRITEBYTECODE", "1");
    command
}

/// Runs `script` with `input` on its stdin and returns its stdout, failing on an error.
fn run_python(script: &str, input: &str) -> String {
    let mut child = python()
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/setup installs it)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn the_python_sdk_unit_tests_pass() {
    let output = python()
        .args(["-m", "unittest", "discover", "-s"])
        .arg(common::root().join("guest-sdk/python/tests"))
        .output()
        .expect("python3 runs");
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("OK"), "{report}");
}

/// Values of every variant, at the varint widths' edges, with maps whose keys sort
/// differently as values and as bytes.
fn rust_corpus() -> Vec<Value> {
    let mut deep = Value::Int(7);
    for _ in 0..300 {
        deep = Value::List(vec![deep]);
    }
    let ints = [
        0,
        1,
        -1,
        125,
        -126,
        250,
        251,
        65_535,
        65_536,
        1 << 32,
        i64::MAX,
        i64::MIN,
    ];
    let mut corpus: Vec<Value> = ints.into_iter().map(Value::Int).collect();
    corpus.extend([
        Value::Null,
        Value::Bool(true),
        Value::Bool(false),
        Value::Float(0.1),
        Value::Float(-0.0),
        Value::Float(f64::INFINITY),
        Value::Float(f64::NAN),
        Value::Float(1e300),
        Value::String(String::new()),
        Value::String("héllo wörld ✓".into()),
        Value::String("x".repeat(70_000)),
        Value::Bytes(vec![0, 255, 7]),
        Value::List(vec![Value::Int(1), Value::Bool(true), Value::Null]),
        Value::Tuple(vec![
            Value::String("a".into()),
            Value::Tuple(vec![Value::Int(1), Value::Float(2.5)]),
        ]),
        Value::Map(vec![
            (Value::String("b".into()), Value::Int(1)),
            (Value::String("a".into()), Value::Int(2)),
            (Value::Int(300), Value::Null),
            (Value::Int(2), Value::Null),
            (
                Value::Tuple(vec![Value::String("k".into()), Value::Int(1)]),
                Value::List(vec![]),
            ),
        ]),
        Value::Struct(vec![
            ("zeta".into(), Value::Int(1)),
            ("alpha".into(), Value::Bytes(vec![])),
            (
                "nested".into(),
                Value::Struct(vec![("x".into(), Value::Float(-3.5))]),
            ),
        ]),
        deep,
    ]);
    corpus
}

#[test]
fn python_decodes_and_reencodes_every_rust_value_to_the_same_bytes() {
    let corpus = rust_corpus();
    let lines: Vec<String> = corpus.iter().map(|value| hex(&value.to_bytes())).collect();
    let script = "import sys\nfrom sluice_sdk import decode, encode\nfor line in sys.stdin:\n    print(encode(decode(bytes.fromhex(line.strip()))).hex())\n";
    let answers = run_python(script, &(lines.join("\n") + "\n"));
    let answers: Vec<&str> = answers.lines().collect();
    assert_eq!(answers.len(), corpus.len());
    for ((value, rust), python) in corpus.iter().zip(&lines).zip(answers) {
        assert_eq!(
            python,
            rust,
            "Python re-encoded {} differently",
            value.to_json().chars().take(200).collect::<String>()
        );
    }
}

#[derive(Serialize)]
struct Point {
    x: i64,
    y: f64,
}

fn rust_bytes<T: Serialize>(value: &T) -> String {
    hex(&encoding::to_bytes(value).expect("encodes"))
}

#[test]
fn python_values_encode_as_the_same_rust_values_do() {
    // Each Python expression beside the Rust value (serde, as a Rust UDF returns it) that
    // must give the same bytes.
    let mut map = std::collections::HashMap::new();
    map.insert("b".to_owned(), 1_i64);
    map.insert("a".to_owned(), 2);
    map.insert("ab".to_owned(), 3);
    let mut tuple_keys = BTreeMap::new();
    tuple_keys.insert((2_i64, "x"), vec![true]);
    tuple_keys.insert((-1, "y"), vec![]);
    let pairs: Vec<(&str, String)> = vec![
        ("True", rust_bytes(&true)),
        ("1", rust_bytes(&1_u8)),
        ("[True, 1, None, 1.0]", {
            let mixed = Value::List(vec![
                Value::Bool(true),
                Value::Int(1),
                Value::Null,
                Value::Float(1.0),
            ]);
            hex(&mixed.to_bytes())
        }),
        ("2**63 - 1", rust_bytes(&i64::MAX)),
        ("-2**63", rust_bytes(&i64::MIN)),
        ("('word', 1)", rust_bytes(&("word", 1_i64))),
        ("{'b': 1, 'a': 2, 'ab': 3}", rust_bytes(&map)),
        ("{(2, 'x'): [True], (-1, 'y'): []}", rust_bytes(&tuple_keys)),
        ("Point(3, 0.5)", rust_bytes(&Point { x: 3, y: 0.5 })),
        (
            "sluice_sdk.Struct(x=3, y=0.5)",
            rust_bytes(&Point { x: 3, y: 0.5 }),
        ),
        ("float('nan')", rust_bytes(&f64::NAN)),
        ("-0.0", rust_bytes(&-0.0_f64)),
        ("'日本'", rust_bytes(&"日本")),
        ("b'\\x00\\x01'", hex(&Value::Bytes(vec![0, 1]).to_bytes())),
        ("[('a', [1, 2]), ('b', [])]", {
            rust_bytes(&vec![("a", vec![1_i64, 2]), ("b", vec![])])
        }),
        ("None", rust_bytes(&Option::<i64>::None)),
        ("[[], ()]", rust_bytes(&(Vec::<i64>::new(), ()))),
    ];
    let expressions: Vec<&str> = pairs.iter().map(|(python, _)| *python).collect();
    let script = "import dataclasses, sys\nimport sluice_sdk\n@dataclasses.dataclass\nclass Point:\n    x: int\n    y: float\nfor line in sys.stdin:\n    print(sluice_sdk.encode(eval(line)).hex())\n";
    let answers = run_python(script, &(expressions.join("\n") + "\n"));
    for ((python, rust), answer) in pairs.iter().zip(answers.lines()) {
        if *python == "[[], ()]" {
            // `()` is Rust's unit (null) but Python's empty tuple: the one place the two
            // languages' spellings differ, so the bytes must differ too.
            assert_ne!(answer, rust, "{python}");
            continue;
        }
        assert_eq!(answer, rust, "{python} encodes as in Rust");
    }
}

#[test]
fn python_refuses_values_outside_the_record_model_naming_their_type() {
    let script = "import sys\nimport sluice_sdk\nfor line in sys.stdin:\n    try:\n        sluice_sdk.encode(eval(line))\n        print('encoded')\n    except sluice_sdk.EncodingError as error:\n        print(error)\n";
    let answers = run_python(
        script,
        "{1, 2}\nobject()\n2**63\n-2**63 - 1\n{float('nan'): 1, -float('nan'): 2}\n",
    );
    let answers: Vec<&str> = answers.lines().collect();
    assert!(answers[0].contains("Python type `set`"), "{}", answers[0]);
    assert!(
        answers[1].contains("Python type `object`"),
        "{}",
        answers[1]
    );
    assert!(
        answers[2].contains("Python type `int` (9223372036854775808) does not fit"),
        "{}",
        answers[2]
    );
    assert!(answers[3].contains("Python type `int`"), "{}", answers[3]);
    assert!(answers[4].contains("the same key twice"), "{}", answers[4]);
}

fn host() -> Host {
    Host::new(RuntimeConfig {
        cache_dir: Some(common::cache_dir()),
        ..RuntimeConfig::default()
    })
    .unwrap()
}

/// Runs each manifest (all in one host, at once) to the end of its input and returns each
/// one's collected sink `out`, batch by batch.
fn collected(manifests: &[String]) -> Vec<Vec<Vec<Value>>> {
    let dir = tempfile::tempdir().unwrap();
    let tokio = tokio::runtime::Runtime::new().unwrap();
    tokio.block_on(async {
        let host = host();
        let mut running = Vec::new();
        for (i, manifest) in manifests.iter().enumerate() {
            let path = dir.path().join(format!("job{i}.toml"));
            std::fs::write(&path, manifest).unwrap();
            let job = host.load(&path).unwrap();
            let collected = job.collected().clone();
            running.push((
                host.start(job, None, &Default::default()).unwrap(),
                collected,
            ));
        }
        let mut outputs = Vec::new();
        for (job, collected) in running {
            job.finished()
                .await
                .expect("the job runs to the end of its input");
            outputs.push(
                collected
                    .batches("out")
                    .into_iter()
                    .map(|(_, records)| records)
                    .collect(),
            );
        }
        outputs
    })
}

fn queue_job(
    name: &str,
    udfs: &[(&str, &Path)],
    batches: &str,
    steps: &[String],
    partitions: usize,
) -> String {
    let udfs: String = udfs
        .iter()
        .map(|(alias, path)| format!("{alias} = \"{}\"\n", path.display()))
        .collect();
    format!(
        "name = \"{name}\"\nbatch_interval = \"50ms\"\npartitions = {partitions}\n[udfs]\n{udfs}[[sources]]\nname = \"n\"\nkind = \"queue\"\nbatches = {batches}\n[[streams]]\nname = \"m\"\nfrom = \"n\"\nsteps = [{}]\n[[sinks]]\nname = \"out\"\nfrom = \"m\"\nkind = \"collect\"\n",
        steps.join(", ")
    )
}

fn step(op: &str, function: &str) -> String {
    format!("{{ op = \"{op}\", udf = \"{function}\" }}")
}

#[test]
fn a_fused_python_chain_gives_what_the_same_steps_split_across_components_give() {
    let numbers: Vec<String> = (0..40).map(|n| n.to_string()).collect();
    let batches = format!(
        "[[{}], [{}]]",
        numbers[..20].join(", "),
        numbers[20..].join(", ")
    );
    let conformance = common::python_udf("conformance");
    let testing = common::python_udf("testing");
    let fused = queue_job(
        "fused",
        &[("py", &conformance)],
        &batches,
        &[
            step("map", "py#add_10"),
            step("filter", "py#is_even"),
            step("flat_map", "py#self_and_double"),
        ],
        2,
    );
    let split = queue_job(
        "split",
        &[("py", &conformance), ("other", &testing)],
        &batches,
        &[
            step("map", "py#add_10"),
            step("filter", "py#is_even"),
            step("flat_map", "other#self_and_double"),
        ],
        2,
    );
    let outputs = collected(&[fused, split]);
    let expected: Vec<Value> = (0..40)
        .map(|n| n + 10)
        .filter(|n| n % 2 == 0)
        .flat_map(|n| [n, 2 * n])
        .map(Value::Int)
        .collect();
    let sorted = |batches: &[Vec<Value>]| {
        let mut all: Vec<String> = batches.iter().flatten().map(Value::to_json).collect();
        all.sort();
        all
    };
    let mut wanted: Vec<String> = expected.iter().map(Value::to_json).collect();
    wanted.sort();
    assert_eq!(sorted(&outputs[0]), wanted, "the fused chain");
    assert_eq!(
        outputs[0], outputs[1],
        "fused and split give the same batches"
    );
}

/// `sluice udf build` bundles the pure-Python dependency `pyproject.toml` names (a wheel
/// checked in beside the project, tests/fixtures/python-dependency, with its source;
/// `PIP_NO_INDEX` keeps pip off any index) into the component, whose step calls into it.
#[test]
fn a_pure_python_dependency_of_the_project_is_bundled_into_its_component() {
    let fixture = common::root().join("tests/fixtures/python-dependency");
    let project = tempfile::tempdir().unwrap();
    std::fs::copy(fixture.join("udf.py"), project.path().join("udf.py")).unwrap();
    let wheel = fixture.join("sluice_fixture_greeting-0.1.0-py3-none-any.whl");
    std::fs::write(
        project.path().join("pyproject.toml"),
        format!(
            "[project]\nname = \"greeter\"\ndependencies = [\"sluice-fixture-greeting @ file://{}\"]\n",
            wheel.display()
        ),
    )
    .unwrap();
    let built = common::sluice()
        .args(["udf", "build"])
        .arg(project.path())
        .env("PIP_NO_INDEX", "1")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "sluice udf build failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let component = project.path().join("target/greeter.wasm");
    assert_eq!(
        String::from_utf8_lossy(&built.stdout).trim(),
        component.display().to_string(),
        "the build prints the component's path"
    );
    let outputs = collected(&[queue_job(
        "greeter",
        &[("g", &component)],
        "[[\"ada\", \"bob\"]]",
        &[step("map", "g#greet")],
        1,
    )]);
    assert_eq!(
        outputs,
        vec![vec![vec![
            Value::String("hello, ada!".into()),
            Value::String("hello, bob!".into()),
        ]]],
        "the step ran the dependency's code"
    );
}

/// A Python map, fold and reduce as combine_by_key's create, merge_value and
/// merge_combiners, over two partitions.
#[test]
fn python_fold_and_reduce_combine_by_key() {
    let testing = common::python_udf("testing");
    let outputs = collected(&[queue_job(
        "combine",
        &[("t", &testing)],
        "[[[\"a\", 1], [\"b\", 2], [\"a\", 3], [\"a\", 5], [\"b\", 7], [\"c\", 9]]]",
        &["{ op = \"combine_by_key\", create = \"t#sum_and_count_of\", merge_value = \"t#add_to_sum_and_count\", merge_combiners = \"t#merge_sums_and_counts\" }".into()],
        2,
    )]);
    let mut pairs: Vec<String> = outputs[0].iter().flatten().map(Value::to_json).collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [r#"["a",[9,3]]"#, r#"["b",[9,2]]"#, r#"["c",[9,1]]"#],
        "per key, (sum, count) of its values"
    );
}

#[test]
fn udf_inspect_lists_python_functions_with_their_kinds() {
    let mut listed = Vec::new();
    for name in ["conformance", "testing"] {
        let output = common::sluice()
            .args(["udf", "inspect"])
            .arg(common::python_udf(name))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let text = String::from_utf8(output.stdout).unwrap();
        listed.extend(text.lines().skip(1).map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields[0].to_owned(), fields[1].to_owned())
        }));
    }
    for (function, kind) in [
        ("add_10", "map"),
        ("self_and_double", "flat-map"),
        ("is_even", "filter"),
        ("partition_sum", "map-partition"),
        ("subtract", "reduce"),
        ("count_into", "fold"),
        ("running_sum", "update-state"),
        ("running_count_emit_count", "map-with-state"),
    ] {
        assert!(
            listed.contains(&(function.into(), kind.into())),
            "`{function}` ({kind}) missing from {listed:?}"
        );
    }
}

#[test]
fn composite_keys_from_python_rust_and_a_table_meet_in_a_join() {
    let dir = tempfile::tempdir().unwrap();
    let words = ["river", "gate", "sluice", "weir", "größe"];
    let batches = format!("[[{}]]", words.map(|word| format!("\"{word}\"")).join(", "));
    // The table's keys are written in typed JSON, where a tuple is `$tuple`.
    let table = dir.path().join("table.jsonl");
    std::fs::write(
        &table,
        words
            .iter()
            .map(|word| {
                let length = word.chars().count();
                format!("{{\"$tuple\": [{{\"$tuple\": [\"{word}\", {length}]}}, \"table\"]}}\n")
            })
            .collect::<String>(),
    )
    .unwrap();
    let manifest = format!(
        r#"name = "mixed"
batch_interval = "50ms"
partitions = 3
[udfs]
py = "{python}"
rs = "{rust}"
[[sources]]
name = "n"
kind = "queue"
batches = {batches}
[[sources]]
name = "t"
kind = "table"
path = "{table}"
[[streams]]
name = "from_python"
from = "n"
steps = [{{ op = "map", udf = "py#keyed_by_length" }}]
[[streams]]
name = "from_rust"
from = "n"
steps = [{{ op = "map", udf = "rs#keyed_by_length" }}]
[[streams]]
name = "m"
from = "from_python"
steps = [{{ op = "join", other = "from_rust" }}, {{ op = "join", other = "t" }}]
[[sinks]]
name = "out"
from = "m"
kind = "collect"
"#,
        python = common::python_udf("testing").display(),
        rust = common::udf("wordcount").display(),
        table = table.display(),
    );
    let outputs = collected(&[manifest]);
    let mut joined: Vec<String> = outputs[0].iter().flatten().map(Value::to_json).collect();
    joined.sort();
    let mut expected: Vec<String> = words
        .iter()
        .map(|word| {
            let length = word.chars().count();
            format!("[[\"{word}\",{length}],[[\"python\",\"rust\"],\"table\"]]")
        })
        .collect();
    expected.sort();
    assert_eq!(joined, expected, "every key met its Rust and table twins");
    let key = &outputs[0].iter().flatten().next().unwrap();
    assert!(
        matches!(key, Value::Tuple(pair) if matches!(&pair[0], Value::Tuple(_))),
        "the keys are tuples: {key:?}"
    );
}

#[test]
fn python_steps_on_four_partitions_run_beside_a_rust_job() {
    let lines: Vec<String> = (0..200)
        .map(|i| {
            format!(
                "\"{} {} {}\"",
                common::wordcount::WORDS[i % 16],
                common::wordcount::WORDS[(i * 7) % 16],
                common::wordcount::WORDS[(i * 3) % 16]
            )
        })
        .collect();
    let batches = format!(
        "[{}]",
        lines
            .chunks(50)
            .map(|chunk| format!("[{}]", chunk.join(", ")))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let python = common::python_udf("conformance");
    let testing = common::python_udf("testing");
    let rust = common::udf("wordcount");
    // Three Python steps (one from another component, so not all of them fuse), four
    // partitions: words -> (word, 1) -> summed by key.
    let words_python = queue_job(
        "python",
        &[("py", &python), ("t", &testing)],
        &batches,
        &[
            step("flat_map", "t#words"),
            step("map", "py#pair_with_one"),
            step("reduce_by_key", "py#sum"),
        ],
        4,
    );
    let words_rust = queue_job(
        "rust",
        &[("rs", &rust)],
        &batches,
        &[
            step("flat_map", "rs#tokenize"),
            step("map", "rs#with_one"),
            step("reduce_by_key", "rs#sum"),
        ],
        4,
    );
    let outputs = collected(&[words_python, words_rust]);
    let totals = |batches: &[Vec<Value>]| -> BTreeMap<String, i64> {
        let mut totals = BTreeMap::new();
        for record in batches.iter().flatten() {
            let Value::Tuple(pair) = record else {
                panic!("{record}")
            };
            let (Value::String(word), Value::Int(count)) = (&pair[0], &pair[1]) else {
                panic!("{record}")
            };
            *totals.entry(word.clone()).or_default() += count;
        }
        totals
    };
    let mut expected = BTreeMap::new();
    for line in &lines {
        for word in line.trim_matches('"').split(' ') {
            *expected.entry(word.to_owned()).or_insert(0) += 1;
        }
    }
    assert_eq!(totals(&outputs[0]), expected, "the Python job");
    assert_eq!(totals(&outputs[1]), expected, "the Rust job beside it");
}

/// A pool of 9 slots, each sized for a Rust component (8 core instances, 2 memories, 4
/// tables). A Python instance has about 14 core instances: counted as one instance, the
/// pooling allocator itself ran out first, at its 6th, with wasmtime's "pool is full"
/// naming none of the reasons. Counted by its own footprint, it takes 2 slots: the 5th is
/// refused by the host's accounting, naming the component's counts, and a Rust instance
/// still fits in the slot left over.
#[test]
fn python_and_rust_instances_share_the_pool_by_their_own_footprints() {
    use sluice::runtime::{CallError, Limit, Limits, Runtime};
    use sluice::tenancy::{Placement, TenantConfig};

    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(common::cache_dir()),
        max_instances: 9,
        tenants: Vec::new(),
    })
    .unwrap();
    let python = runtime.load(&common::python_udf("testing")).unwrap();
    let rust = runtime.load(&common::udf("wordcount")).unwrap();
    let (python_slots, rust_slots) = (python.footprint().slots(), rust.footprint().slots());
    assert!(
        python.footprint().core_instances > 8 && python_slots >= 2,
        "{:?}",
        python.footprint()
    );
    assert_eq!(rust_slots, 1, "{:?}", rust.footprint());

    runtime.tenancy().add(TenantConfig::named("t")).unwrap();
    let account = runtime.tenancy().account("t").unwrap();
    let placement = Placement {
        seat: runtime.scheduler().seat("t", 1, Default::default()),
        account: account.clone(),
        job: None,
    };
    let instantiate = |component: &sluice::runtime::LoadedComponent| {
        component.instantiate("pool test", Limits::default(), &placement)
    };
    let fit = (9 / python_slots) as usize;
    let mut held: Vec<_> = (0..fit)
        .map(|i| {
            instantiate(&python).unwrap_or_else(|error| panic!("Python instance {i}: {error}"))
        })
        .collect();
    match instantiate(&python) {
        Err(CallError::Limit {
            limit: Limit::TenantInstances,
            message,
            ..
        }) => assert!(
            message.contains(&format!(
                "takes {python_slots} slots of the host's instance pool (it has {}",
                python.footprint()
            )) && message.contains("of the 9 instance slots of the host's pool"),
            "{message}"
        ),
        Err(error) => panic!("refused for another reason than the pool's accounting: {error}"),
        Ok(_) => panic!("{} Python instances fit in 9 slots", fit + 1),
    }
    let left = 9 - fit * python_slots as usize;
    for _ in 0..left {
        held.push(instantiate(&rust).expect("a Rust instance fits in a slot left over"));
    }
    assert_eq!((account.instances(), account.slots()), (fit + left, 9));
    assert!(instantiate(&rust).is_err(), "the pool is full");
    drop(held);
    assert_eq!((account.instances(), account.slots()), (0, 0));
    let rust_only: Vec<_> = (0..9).map(|_| instantiate(&rust).unwrap()).collect();
    assert_eq!(account.slots(), rust_only.len());
}

/// Runs a one-step job over `records` (a TOML array) with the testing component's
/// `function`, under `limits`, beside a healthy job of the same host; returns the error.
fn fails(function: &str, records: &str, limits: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let testing = common::python_udf("testing");
    let manifest = queue_job(
        "hostile",
        &[("t", &testing)],
        &format!("[{records}, []]"),
        &[step("map", &format!("t#{function}"))],
        1,
    )
    .replacen("[udfs]", &format!("{limits}\n[udfs]"), 1);
    let healthy = queue_job(
        "healthy",
        &[("t", &testing)],
        "[[\"a b\"], [\"c\"], [\"d\"], [\"e\"], [\"f\"], [\"g\"]]",
        &[step("flat_map", "t#words")],
        1,
    );
    let hostile_path = dir.path().join("hostile.toml");
    let healthy_path = dir.path().join("healthy.toml");
    std::fs::write(&hostile_path, manifest).unwrap();
    std::fs::write(&healthy_path, healthy).unwrap();
    let tokio = tokio::runtime::Runtime::new().unwrap();
    tokio.block_on(async {
        let host = host();
        let healthy = host.load(&healthy_path).unwrap();
        let words = healthy.collected().clone();
        let healthy = host.start(healthy, None, &Default::default()).unwrap();
        let hostile = host
            .start(host.load(&hostile_path).unwrap(), None, &Default::default())
            .unwrap();
        let error = hostile.finished().await.expect_err("the hostile job fails");
        tokio::time::timeout(Duration::from_secs(60), healthy.finished())
            .await
            .expect("the healthy job ends")
            .expect("the healthy job ends cleanly");
        let words: usize = words
            .batches("out")
            .iter()
            .map(|(_, records)| records.len())
            .sum();
        assert_eq!(words, 7, "the healthy job beside it computed every batch");
        format!("{error:#}")
    })
}

fn assert_says(error: &str, parts: &[&str]) {
    for part in parts {
        assert!(error.contains(part), "`{part}` missing from: {error}");
    }
}

#[test]
fn a_python_exception_fails_the_batch_naming_step_record_and_exception() {
    let error = fails("raise_at_two", "[1, 2, 3]", "");
    assert_says(
        &error,
        &[
            "step 1",
            "t#raise_at_two",
            "ValueError: two is not welcome here (at udf.py:",
            "in `raise_at_two`",
            "record 1",
        ],
    );
}

#[test]
fn a_python_loop_is_stopped_at_the_call_timeout() {
    let error = fails("loop_forever", "[1]", "[limits]\ncall_timeout = \"300ms\"");
    assert_says(
        &error,
        &[
            "step 1",
            "t#loop_forever",
            "call timeout of 300 ms",
            "limits.call_timeout",
            "(record 0 of its partition)",
        ],
    );
}

/// The bomb traps (its memory growth refused) without telling which record it was on: the
/// host finds it by running the records again one at a time.
#[test]
fn a_python_memory_bomb_is_stopped_at_the_memory_limit_naming_its_record() {
    let error = fails(
        "hoard_memory_at_two",
        "[1, 2, 3]",
        "[limits]\nmemory = \"64MiB\"",
    );
    assert_says(
        &error,
        &[
            "step 1",
            "t#hoard_memory_at_two",
            "past the limit of 67108864 bytes",
            "limits.memory",
            "(record 1 of its partition)",
        ],
    );
}

/// A bomb Python refuses itself (a `MemoryError` for more than a 32-bit guest can address)
/// names the memory limit too.
#[test]
fn a_python_memory_error_names_the_memory_limit_and_its_record() {
    let error = fails("allocate_past_the_address_space_at_two", "[1, 2, 3]", "");
    assert_says(
        &error,
        &[
            "step 1",
            "t#allocate_past_the_address_space_at_two",
            "ran out of memory: MemoryError (at udf.py:",
            "memory limit is 268435456 bytes (256.00 MiB) (`limits.memory`",
            "(record 1 of its partition)",
        ],
    );
}

/// Python keeps its own frames in linear memory, not on the WebAssembly stack: under a
/// small memory limit, recursion past a raised limit runs out of memory first.
#[test]
fn deep_python_recursion_under_a_small_memory_limit_names_the_memory_limit_and_record() {
    let error = fails("recurse_deeply", "[1]", "[limits]\nmemory = \"64MiB\"");
    assert_says(
        &error,
        &[
            "step 1",
            "t#recurse_deeply",
            "past the limit of 67108864 bytes",
            "limits.memory",
            "(record 0 of its partition)",
        ],
    );
}

/// Recursion through a built-in (`repr`) runs on the WebAssembly call stack: past a raised
/// recursion limit it overflows it, a trap the host names as a stack overflow.
#[test]
fn python_recursion_that_overflows_the_call_stack_is_a_stack_overflow_naming_its_record() {
    let error = fails("recurse_through_repr_at_two", "[1, 2, 3]", "");
    assert_says(
        &error,
        &[
            "step 1",
            "t#recurse_through_repr_at_two",
            "was stopped by a stack overflow: it exhausted its WebAssembly call stack",
            "(record 1 of its partition)",
        ],
    );
}

#[test]
fn deep_python_recursion_past_a_raised_limit_is_a_clear_stack_error() {
    let error = fails("recurse_deeply", "[1]", "");
    assert_says(
        &error,
        &[
            "t#recurse_deeply",
            "RecursionError: maximum recursion depth exceeded",
            "record 0",
        ],
    );
}

#[test]
fn unencodable_python_results_name_their_type_and_record() {
    for (function, says) in [
        ("return_set", "Python type `set`"),
        ("return_object", "Python type `object`"),
        ("return_huge_int", "Python type `int` (9223372036854775808)"),
    ] {
        let error = fails(function, "[0, 1, 2]", "");
        assert_says(
            &error,
            &[function, says, "result for record 0 cannot be encoded"],
        );
    }
}

#[test]
fn batch_time_outside_a_state_function_is_a_clear_error() {
    let error = fails("batch_time_outside_state", "[1]", "");
    assert_says(
        &error,
        &["only known while an update_state or map_with_state function runs"],
    );
}
