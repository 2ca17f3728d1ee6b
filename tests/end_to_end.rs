//! End-to-end tests: jobs run through the `sluice` binary with real sources and sinks,
//! manifests with mistakes, and misbehaving UDFs next to a healthy job in one host.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value as Json;

use common::run::Run;
use common::sluice;
use common::wait;

fn write_manifest(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("job.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Reads every `<prefix>-<time>.jsonl` file of `dir`, in batch order.
fn json_outputs(dir: &Path, prefix: &str) -> Vec<(i64, Vec<Json>)> {
    let mut files: Vec<(i64, Vec<Json>)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let time = name
                .strip_prefix(&format!("{prefix}-"))?
                .strip_suffix(".jsonl")?
                .parse()
                .ok()?;
            let text = std::fs::read_to_string(entry.path()).unwrap();
            Some((
                time,
                text.lines()
                    .map(|line| serde_json::from_str(line).unwrap())
                    .collect(),
            ))
        })
        .collect();
    files.sort_by_key(|(time, _)| *time);
    files
}

/// Sums `[word, count]` pairs over all batches.
fn total_counts(batches: &[(i64, Vec<Json>)]) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for (_, records) in batches {
        for pair in records {
            *totals
                .entry(pair[0].as_str().unwrap().to_owned())
                .or_insert(0) += pair[1].as_i64().unwrap();
        }
    }
    totals
}

fn counts(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs
        .iter()
        .map(|(word, count)| (word.to_string(), *count))
        .collect()
}

/// Stops a running `sluice run` as Ctrl-C would, and returns its output.
fn interrupt(child: Child) -> Output {
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "sluice run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn wordcount_job(source: &str, out: &Path) -> String {
    format!(
        r#"
name = "wc"
batch_interval = "200ms"

[udfs]
wc = "{udf}"

[[sources]]
name = "lines"
{source}

[[streams]]
name = "counts"
from = "lines"
steps = [
  {{ op = "flat_map", udf = "wc#tokenize" }},
  {{ op = "count_by_value" }},
]

[[sinks]]
from = "counts"
kind = "files"
prefix = "{out}/counts"
suffix = "jsonl"
format = "json_lines"
"#,
        udf = common::udf("wordcount").display(),
        out = out.display()
    )
}

#[test]
fn socket_word_count_counts_every_line_and_survives_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let job = write_manifest(
        dir.path(),
        &wordcount_job(&format!("kind = \"socket\"\nport = {port}"), dir.path()),
    );
    let child = sluice()
        .args(["run", job.to_str().unwrap(), "--log", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let (mut client, _) = listener.accept().unwrap();
    client
        .write_all(b"the quick brown fox\nthe lazy dog\r\n")
        .unwrap();
    client.flush().unwrap();
    std::thread::sleep(Duration::from_millis(450));
    client
        .write_all(b"The fox, the dog!\n\xff\xfe broken bytes\n")
        .unwrap();
    drop(client);
    // The server went away and came back: the receiver reconnects.
    let (mut again, _) = listener.accept().unwrap();
    again.write_all(b"reconnected\n").unwrap();
    drop(again);

    let expected = counts(&[
        ("the", 4),
        ("quick", 1),
        ("brown", 1),
        ("fox", 2),
        ("lazy", 1),
        ("dog", 2),
        ("broken", 1),
        ("bytes", 1),
        ("reconnected", 1),
    ]);
    wait::until(Duration::from_secs(20), "all words counted", || {
        total_counts(&json_outputs(dir.path(), "counts")) == expected
    });
    let output = interrupt(child);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not valid UTF-8"),
        "the garbage line is reported"
    );
    assert_eq!(total_counts(&json_outputs(dir.path(), "counts")), expected);
}

/// Sleeps until `offset_ms` past the next multiple of `interval_ms` on the wall clock, and
/// returns the time of the batch that records sent then land in (the interval's end).
fn into_next_batch(interval_ms: i64, offset_ms: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let start = (now / interval_ms + 1) * interval_ms;
    std::thread::sleep(Duration::from_millis((start + offset_ms - now) as u64));
    start + interval_ms
}

#[test]
fn windowed_word_count_over_a_socket_gives_every_windows_exact_counts() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let manifest = wordcount_job(&format!("kind = \"socket\"\nport = {port}"), dir.path())
        .replace(
            "batch_interval = \"200ms\"",
            "batch_interval = \"1s\"\n[checkpoint]\ndir = \"checkpoint\"",
        )
        .replace(
            "{ op = \"count_by_value\" },",
            "{ op = \"map\", udf = \"wc#with_one\" },\n  { op = \"reduce_by_key_and_window\", udf = \"wc#sum\", inverse = \"wc#subtract\", window = \"3s\", slide = \"2s\" },",
        );
    let job = write_manifest(dir.path(), &manifest);
    let child = sluice()
        .args(["run", job.to_str().unwrap(), "--log", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut client, _) = listener.accept().unwrap();

    // One group of lines per batch, each sent 300 ms into its batch interval.
    let groups = [
        "apple banana apple",
        "banana cherry",
        "",
        "apple",
        "",
        "",
        "",
    ];
    let mut sent: Vec<(i64, &str)> = Vec::new();
    for group in groups {
        let batch_time = into_next_batch(1000, 300);
        if !group.is_empty() {
            client.write_all(format!("{group}\n").as_bytes()).unwrap();
            client.flush().unwrap();
        }
        sent.push((batch_time, group));
    }
    let last = sent.last().unwrap().0;
    wait::until(
        Duration::from_secs(20),
        "the window after the last batch",
        || {
            json_outputs(dir.path(), "counts")
                .last()
                .is_some_and(|(time, _)| *time >= last)
        },
    );
    interrupt(child);

    let outputs = json_outputs(dir.path(), "counts");
    let windows: Vec<&(i64, Vec<Json>)> = outputs
        .iter()
        .filter(|(time, _)| *time >= sent[0].0)
        .collect();
    assert!(windows.len() >= 3, "a window every 2 batches: {outputs:?}");
    assert!(
        windows.windows(2).all(|pair| pair[1].0 - pair[0].0 == 2000),
        "windows slide by 2 s: {outputs:?}"
    );
    for (time, pairs) in &windows {
        // Every word seen so far, counted over the last 3 batches: with an inverse
        // function a word that left the window stays, with 0, as in Spark.
        let mut expected: BTreeMap<String, i64> = BTreeMap::new();
        for (batch, group) in sent.iter().filter(|(batch, _)| batch <= time) {
            for word in group.split_whitespace() {
                *expected.entry(word.to_owned()).or_insert(0) += i64::from(*batch > time - 3000);
            }
        }
        assert_eq!(
            total_counts(&[(*time, pairs.clone())]),
            expected,
            "window ending at {time}"
        );
    }
    assert!(
        windows
            .iter()
            .any(|(_, pairs)| pairs.iter().any(|pair| pair[1] == 0)),
        "some word fell out of a window"
    );
}

#[test]
fn transactions_join_static_reference_tables() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::root().join("examples/transactions/transactions.csv"),
        dir.path().join("transactions.csv"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("accounts.csv"),
        "account,owner,branch\nACC-1,Ada,North\nACC-2,Grace,South\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("flagged.jsonl"),
        "[\"ACC-3\", \"reported lost\"]\n\n[\"ACC-9\", \"closed\"]\n",
    )
    .unwrap();
    let manifest = format!(
        r#"
name = "enrich"
batch_interval = "100ms"

[udfs]
tx = "{udf}"

[[sources]]
name = "lines"
kind = "file"
path = "transactions.csv"

[[sources]]
name = "accounts"
kind = "table"
path = "accounts.csv"

[[sources]]
name = "flagged"
kind = "table"
path = "flagged.jsonl"

[[streams]]
name = "keyed"
from = "lines"
steps = [
  {{ op = "map", udf = "tx#parse" }},
  {{ op = "flat_map", udf = "tx#parsed" }},
  {{ op = "map", udf = "tx#by_account" }},
]

[[streams]]
name = "owned"
from = "keyed"
steps = [{{ op = "left_outer_join", other = "accounts" }}]

[[streams]]
name = "alerts"
from = "keyed"
steps = [{{ op = "transform_with", other = "flagged", batch_op = "join" }}]

[[sinks]]
from = "owned"
kind = "files"
prefix = "out/owned"
suffix = "jsonl"
format = "json_lines"

[[sinks]]
from = "alerts"
kind = "files"
prefix = "out/alerts"
suffix = "jsonl"
format = "json_lines"
"#,
        udf = common::udf("transactions").display()
    );
    let job = write_manifest(dir.path(), &manifest);
    let output = sluice()
        .args(["run", job.to_str().unwrap(), "--log", "json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let records = |prefix| -> Vec<String> {
        let mut lines: Vec<String> = json_outputs(&dir.path().join("out"), prefix)
            .into_iter()
            .flat_map(|(_, records)| records)
            .map(|r| r.to_string())
            .collect();
        lines.sort();
        lines
    };
    let owned: Vec<(i64, Json)> = records("owned")
        .iter()
        .map(|line| {
            let pair: Json = serde_json::from_str(line).unwrap();
            (pair[1][0]["id"].as_i64().unwrap(), pair[1][1].clone())
        })
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect();
    assert_eq!(
        owned,
        [
            (1, serde_json::json!(["Ada", "North"])),
            (2, serde_json::json!(["Grace", "South"])),
            (4, Json::Null),
            (7, serde_json::json!(["Ada", "North"])),
        ],
        "every transaction once, with its owner or null for an unknown account"
    );
    let alerts = records("alerts");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(
        alerts[0].contains("\"reported lost\"") && alerts[0].contains("\"id\":4"),
        "{alerts:?}"
    );
}

#[test]
fn directory_source_reads_each_file_moved_in_once() {
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("incoming");
    std::fs::create_dir(&watched).unwrap();
    std::fs::write(watched.join("before-start.txt"), "ignored ignored\n").unwrap();
    let job = write_manifest(
        dir.path(),
        &wordcount_job(
            &format!("kind = \"directory\"\npath = \"{}\"", watched.display()),
            dir.path(),
        ),
    );
    let mut run = Run::start(&job, &[]);
    run.wait_for("watching");
    for (name, text) in [("a.txt", "alpha beta\nbeta\n"), ("b.txt", "gamma alpha\n")] {
        let staged = dir.path().join(name);
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, watched.join(name)).unwrap();
        run.wait_for(&format!("from {}", watched.join(name).display()));
    }
    let expected = counts(&[("alpha", 2), ("beta", 2), ("gamma", 1)]);
    wait::until(Duration::from_secs(20), "both files counted", || {
        total_counts(&json_outputs(dir.path(), "counts")) == expected
    });
    // A few more batches (each 200 ms, two polls of the directory), in which a file read
    // twice would show.
    for _ in 0..3 {
        run.wait_for("batch done");
    }
    run.signal("INT");
    let (status, log) = run.finish();
    assert!(status.success(), "{log:#?}");
    assert_eq!(
        total_counts(&json_outputs(dir.path(), "counts")),
        expected,
        "no file is read twice, none present at the start"
    );
}

#[test]
fn a_file_source_whose_file_changes_under_the_job_fails_naming_it_and_keeps_what_it_counted() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    // One line a batch, more batches than the job can run before the file is changed.
    let lines: Vec<String> = (0..200).map(|n| format!("word{} common", n % 3)).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let job = write_manifest(
        dir.path(),
        &wordcount_job(
            &format!(
                "kind = \"file\"\npath = \"{}\"\nlines_per_batch = 1",
                input.display()
            ),
            dir.path(),
        ),
    );
    let mut run = Run::start(&job, &[]);
    run.wait_for("batch done");
    // Appending changes the size the start's scan saw: the next batch read must fail.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    file.write_all(b"late line\n").unwrap();
    drop(file);
    let status = wait::exit_within(&mut run.child, Duration::from_secs(30))
        .expect("the job stops once its file changed");
    let (_, log) = run.finish();
    assert!(!status.success(), "a changed file fails the job: {log:#?}");
    let named = log.iter().any(|line| {
        let text = line.to_string();
        text.contains("changed after the job started") && text.contains("in.txt")
    });
    assert!(
        named,
        "the error names the file and what happened: {log:#?}"
    );
    // The batches done before the change stay written, and count only lines of the file
    // as it was at the start.
    let done = log
        .iter()
        .filter(|line| common::run::message_of(line).contains("batch done"))
        .count();
    let counted = total_counts(&json_outputs(dir.path(), "counts"));
    assert!(done >= 1);
    assert_eq!(
        counted.get("common").copied(),
        Some(done as i64),
        "{log:#?}"
    );
    assert!(!counted.contains_key("late"), "{counted:?}");
}

#[test]
fn transactions_job_separates_malformed_lines_with_their_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let example = common::root().join("examples/transactions");
    std::fs::copy(
        example.join("transactions.csv"),
        dir.path().join("transactions.csv"),
    )
    .unwrap();
    let manifest = std::fs::read_to_string(example.join("job.toml"))
        .unwrap()
        .replace(
            "../../udfs",
            &common::root().join("udfs").display().to_string(),
        );
    let job = write_manifest(dir.path(), &manifest);
    let output = sluice()
        .args(["run", job.to_str().unwrap(), "--log", "json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let out = dir.path().join("out");
    let parsed = json_outputs(&out, "transactions");
    let rejected = json_outputs(&out, "rejected");
    assert_eq!(parsed.len(), 2, "8 lines at 4 per batch make 2 batches");
    assert_eq!(rejected.len(), 2, "empty batches still get their file");
    let ids: Vec<i64> = parsed
        .iter()
        .flat_map(|(_, records)| records)
        .map(|t| t["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 4, 7]);
    assert_eq!(
        parsed[0].1[1],
        serde_json::json!({"id": 2, "date": "2024-03-01", "account": "ACC-2", "amount": 2500.0, "description": "salary, March"})
    );
    let reasons: Vec<(String, String)> = rejected
        .iter()
        .flat_map(|(_, records)| records)
        .map(|r| {
            (
                r["line"].as_str().unwrap().to_owned(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (
                "three,2024-03-02,ACC-1,-4.00,bus ticket".to_owned(),
                "id `three` is not an integer".to_owned()
            ),
            (
                "5,2024-02-30x,ACC-1,-9.99,streaming service".to_owned(),
                "date `2024-02-30x` is not YYYY-MM-DD".to_owned()
            ),
            (
                "6,2024-03-03,ACC-2,lots,mystery".to_owned(),
                "amount `lots` is not a number".to_owned()
            ),
            (
                "garbage line without commas".to_owned(),
                "expected 5 comma-separated fields, found 1".to_owned()
            ),
        ]
    );
}

#[test]
fn manifest_mistakes_are_rejected_with_position_and_hint() {
    let dir = tempfile::tempdir().unwrap();
    let good = wordcount_job("kind = \"queue\"\nbatches = [[\"a b\"]]", dir.path());
    let check = |text: &str| {
        let job = write_manifest(dir.path(), text);
        let output = sluice()
            .args(["check", job.to_str().unwrap()])
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    assert_eq!(
        check(&good).0,
        Some(0),
        "the unmodified manifest is valid: {}",
        check(&good).1
    );

    let cases = [
        (
            good.replace("batch_interval", "batch_intervall"),
            "unknown field `batch_intervall`",
            ":3:1",
        ),
        (
            good.replace("batch_interval = \"200ms\"", "batch_interval = 200"),
            "invalid type: integer `200`, expected a string",
            ":3:18",
        ),
        (
            good.replace("batch_interval = \"200ms\"", "batch_interval = \"soon\""),
            "is not a duration",
            ":3:18",
        ),
        (
            good.replace("wordcount.wasm", "nothing-here.wasm"),
            "cannot open UDF component",
            ":6:6",
        ),
        (
            good.replace("wc#tokenize", "wc#tokenise"),
            "has no function `tokenise`",
            ":17:28",
        ),
        (
            good.replace(
                "\"flat_map\", udf = \"wc#tokenize\"",
                "\"map\", udf = \"wc#tokenize\"",
            ),
            "`map` needs a map function, but `tokenize` is a flat-map function",
            ":17:23",
        ),
        (
            good.replace("from = \"lines\"", "from = \"line\""),
            "no source or stream is named `line`",
            ":15:8",
        ),
        (
            good.replace(
                "{ op = \"count_by_value\" }",
                "{ op = \"count_by_value\", udf = \"wc#sum\" }",
            ),
            "`udf` does not apply to the `count_by_value` step",
            ":18:34",
        ),
        (
            good.replace("kind = \"queue\"", "kind = \"carrier-pigeon\""),
            "unknown source kind `carrier-pigeon`",
            ":10:8",
        ),
        (
            good.replace(
                "{ op = \"count_by_value\" }",
                "{ op = \"window\", window = \"500ms\" }",
            ),
            "`window` = \"500ms\" is not a multiple of the batch interval (200 ms)",
            ":18:29",
        ),
        (
            good.replace(
                "{ op = \"count_by_value\" }",
                "{ op = \"window\", window = \"1s\", slide = \"300ms\" }",
            ),
            "`slide` = \"300ms\" is not a multiple of the batch interval (200 ms)",
            ":18:43",
        ),
        (
            good.replace("{ op = \"count_by_value\" }", "{ op = \"join\" }"),
            "`join` needs a second stream",
            "other = ",
        ),
        (
            good.replace(
                "{ op = \"count_by_value\" }",
                "{ op = \"join\", other = \"nowhere\" }",
            ),
            "no source or stream is named `nowhere`",
            ":18:26",
        ),
        (
            good.replace(
                "{ op = \"count_by_value\" }",
                "{ op = \"map\", udf = \"wc#with_one\" }, { op = \"update_state_by_key\", udf = \"wc#running_count\" }",
            ),
            "`update_state_by_key` keeps state across batches, and the job has no checkpoint directory",
            "[checkpoint]",
        ),
        (
            good.replace("{ op = \"count_by_value\" }", "{ op = \"state_snapshots\" }"),
            "`state_snapshots` does not follow a `map_with_state` step",
            ":18:10",
        ),
        (
            good.replace(
                "batch_interval = \"200ms\"",
                "batch_interval = \"200ms\"\n[checkpoint]\ndir = \"c\"\nfsync = \"sometimes\"",
            ),
            "unknown fsync policy `sometimes`",
            ":6:9",
        ),
    ];
    for (text, message, detail) in cases {
        let (code, output) = check(&text);
        assert_eq!(code, Some(2), "{message}: {output}");
        assert!(
            output.contains(message),
            "expected `{message}` in: {output}"
        );
        assert!(output.contains(detail), "expected `{detail}` in: {output}");
        assert!(output.contains("job.toml"), "the file is named: {output}");
        assert!(output.contains("help:"), "a hint is given: {output}");
    }
}

#[test]
fn every_example_manifest_is_valid() {
    let examples = common::root().join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let manifest = entry.unwrap().path().join("job.toml");
        let output = sluice().arg("check").arg(&manifest).output().unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            manifest.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} examples found");
}

#[test]
fn guest_output_goes_to_the_job_log() {
    let dir = tempfile::tempdir().unwrap();
    let job = format!(
        "name = \"chatty\"\nbatch_interval = \"50ms\"\n[[sources]]\nname = \"n\"\nkind = \"queue\"\nbatches = [[1, 2]]\n[[streams]]\nname = \"m\"\nfrom = \"n\"\nsteps = [{{ op = \"map\", udf = \"{}#chatty\" }}]\n[[sinks]]\nfrom = \"m\"\nkind = \"print\"\n",
        common::udf("faulty").display()
    );
    let job = write_manifest(dir.path(), &job);
    let output = sluice()
        .args(["run", job.to_str().unwrap(), "--log", "json"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(
        log.contains("chatty saw 2") && log.contains("chatty warns about 1"),
        "{log}"
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("Time: "),
        "the print sink printed"
    );
}

/// Runs the job `text` (a manifest whose sinks are `collect` sinks) in one host until
/// its sources are drained, and returns what the sink called `out` kept.
fn collected(text: &str) -> Vec<(i64, Vec<Json>)> {
    collected_from(text, "out")
}

/// Runs the job in `text` until its sources are drained; what its collect sink `sink` kept.
fn collected_from(text: &str, sink: &str) -> Vec<(i64, Vec<Json>)> {
    let dir = tempfile::tempdir().unwrap();
    let path = write_manifest(dir.path(), text);
    let tokio = tokio::runtime::Runtime::new().unwrap();
    tokio.block_on(async {
        let host = sluice::host::Host::new(sluice::runtime::RuntimeConfig {
            cache_dir: None,
            ..Default::default()
        })
        .unwrap();
        let job = std::sync::Arc::new(host.load(&path).unwrap());
        let receivers = sluice::receivers::Receivers::start(&job.config().sources).unwrap();
        let options = sluice::batcher::RunOptions {
            max_batches: None,
            stop: Default::default(),
            phase: Default::default(),
        };
        sluice::batcher::run(job.clone(), receivers, None, options, |_| {})
            .await
            .unwrap();
        let batches = job.collected().batches(sink);
        batches
            .into_iter()
            .map(|(time, records)| {
                (
                    time,
                    records
                        .iter()
                        .map(|r| serde_json::from_str(&r.to_json()).unwrap())
                        .collect(),
                )
            })
            .collect()
    })
}

#[test]
fn combine_by_key_averages_per_key_across_partitions() {
    let job = format!(
        "name = \"averages\"\nbatch_interval = \"20ms\"\npartitions = 3\n[udfs]\ntx = \"{}\"\n[[sources]]\nname = \"amounts\"\nkind = \"queue\"\nbatches = [[[\"a\", 1.0], [\"b\", 10.0], [\"a\", 2.0], [\"a\", 6.0], [\"b\", 20.0], [\"c\", 5.0]], []]\n[[streams]]\nname = \"means\"\nfrom = \"amounts\"\nsteps = [\n  {{ op = \"combine_by_key\", create = \"tx#average_of\", merge_value = \"tx#add_to_average\", merge_combiners = \"tx#merge_averages\" }},\n  {{ op = \"map_values\", udf = \"tx#mean\" }},\n]\n[[sinks]]\nname = \"out\"\nfrom = \"means\"\nkind = \"collect\"\n",
        common::udf("transactions").display()
    );
    let batches = collected(&job);
    assert_eq!(batches.len(), 2);
    let mut means: Vec<String> = batches[0].1.iter().map(Json::to_string).collect();
    means.sort();
    assert_eq!(means, [r#"["a",3.0]"#, r#"["b",15.0]"#, r#"["c",5.0]"#]);
    assert!(batches[1].1.is_empty(), "an empty batch has no keys");
}

#[test]
fn reduce_by_window_with_and_without_an_inverse_agree_with_spark() {
    let job = |inverse: &str| {
        format!(
            "name = \"windowed-sum\"\nbatch_interval = \"20ms\"\n[checkpoint]\ndir = \"not-opened-by-this-test\"\n[udfs]\nc = \"{}\"\n[[sources]]\nname = \"n\"\nkind = \"queue\"\nbatches = [[1], [2, 3], [], [4], [], []]\n[[streams]]\nname = \"sums\"\nfrom = \"n\"\nsteps = [{{ op = \"reduce_by_window\", udf = \"c#sum\"{inverse}, window = \"60ms\", slide = \"40ms\" }}]\n[[sinks]]\nname = \"out\"\nfrom = \"sums\"\nkind = \"collect\"\n",
            common::udf("conformance").display()
        )
    };
    let values = |batches: Vec<(i64, Vec<Json>)>| -> Vec<Vec<i64>> {
        batches
            .into_iter()
            .map(|(_, r)| r.iter().map(|v| v.as_i64().unwrap()).collect())
            .collect()
    };
    // Windows of 3 batches every 2: at batch 2 (1..=2), 4 (2..=4), 6 (4..=6).
    assert_eq!(values(collected(&job(""))), [vec![6], vec![9], vec![4]]);
    assert_eq!(
        values(collected(&job(", inverse = \"c#subtract\""))),
        [vec![6], vec![9], vec![4]]
    );
}

/// A mapWithState job over 12 batches of 300 ms: `a`, `b`, `c` and `d` are last seen at
/// batches 1, 2, 3 and 5, `e` at 1 and 9; the timeout is 600 ms.
fn idle_keys_job(dir: &Path, check_every: &str) -> String {
    format!(
        "name = \"idle\"\nbatch_interval = \"300ms\"\n[checkpoint]\ndir = \"{}\"\n[udfs]\nwc = \"{}\"\n[[sources]]\nname = \"words\"\nkind = \"queue\"\nbatches = [[\"a\", \"e\"], [\"b\"], [\"c\"], [], [\"d\"], [], [], [], [\"e\"], [], [], []]\n[[streams]]\nname = \"counts\"\nfrom = \"words\"\nsteps = [{{ op = \"map\", udf = \"wc#with_one\" }}, {{ op = \"map_with_state\", udf = \"wc#count_each\", timeout = \"600ms\"{check_every} }}]\n[[streams]]\nname = \"states\"\nfrom = \"counts\"\nsteps = [{{ op = \"state_snapshots\" }}]\n[[sinks]]\nname = \"out\"\nfrom = \"counts\"\nkind = \"collect\"\n[[sinks]]\nname = \"states\"\nfrom = \"states\"\nkind = \"collect\"\n",
        dir.join("checkpoint").display(),
        common::udf("wordcount").display()
    )
}

/// Each batch's records, sorted (mapWithState's output order within a batch is not set).
fn sorted_batches(batches: Vec<(i64, Vec<Json>)>) -> Vec<Vec<Json>> {
    batches
        .into_iter()
        .map(|(_, mut records)| {
            records.sort_by_key(Json::to_string);
            records
        })
        .collect()
}

#[test]
fn map_with_state_times_idle_keys_out_together_at_the_check_batch_as_spark_does() {
    let dir = tempfile::tempdir().unwrap();
    let job = idle_keys_job(dir.path(), "");
    let pair = |word: &str, count: i64| serde_json::json!([word, count]);
    // Spark looks for idle keys when it checkpoints mapWithState's state, every 10 batches:
    // at batch 10 (time t0 + 3000 ms) every key last updated before t0 + 2400 ms times
    // out, together; `e`, updated at batch 9, stays.
    let mut expected = vec![Vec::new(); 12];
    expected[0] = vec![pair("a", 1), pair("e", 1)];
    expected[1] = vec![pair("b", 1)];
    expected[2] = vec![pair("c", 1)];
    expected[4] = vec![pair("d", 1)];
    expected[8] = vec![pair("e", 2)];
    expected[9] = vec![pair("a", 1), pair("b", 1), pair("c", 1), pair("d", 1)];
    assert_eq!(sorted_batches(collected_from(&job, "out")), expected);
    // Idle keys stay in the state until the check.
    let keys: Vec<Vec<String>> = sorted_batches(collected_from(&job, "states"))
        .into_iter()
        .map(|pairs| pairs.iter().map(|pair| pair[0].to_string()).collect())
        .collect();
    let all: Vec<String> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|k| format!("\"{k}\""))
        .collect();
    assert_eq!(keys[8], all);
    assert_eq!(keys[9], ["\"e\""]);
    assert_eq!(keys[11], ["\"e\""]);
}

#[test]
fn map_with_state_checked_every_batch_times_each_key_out_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let job = idle_keys_job(dir.path(), ", timeout_check_every = 1");
    let pair = |word: &str, count: i64| serde_json::json!([word, count]);
    // Batch n has time t0 + n x 300 ms. Checked every batch, a key times out at the first
    // batch whose time minus the timeout is past its last update: three batches later.
    let mut expected = vec![Vec::new(); 12];
    expected[0] = vec![pair("a", 1), pair("e", 1)];
    expected[1] = vec![pair("b", 1)];
    expected[2] = vec![pair("c", 1)];
    expected[3] = vec![pair("a", 1), pair("e", 1)];
    expected[4] = vec![pair("b", 1), pair("d", 1)];
    expected[5] = vec![pair("c", 1)];
    expected[7] = vec![pair("d", 1)];
    expected[8] = vec![pair("e", 1)];
    expected[11] = vec![pair("e", 1)];
    assert_eq!(sorted_batches(collected_from(&job, "out")), expected);
}

mod faulty_udfs {
    use super::*;
    use sluice::host::Host;
    use sluice::runtime::RuntimeConfig;

    fn faulty_job(function: &str, limits: &str) -> String {
        format!(
            "name = \"faulty-{function}\"\nbatch_interval = \"50ms\"\npartitions = 1\n[limits]\n{limits}\n[[sources]]\nname = \"n\"\nkind = \"queue\"\nbatches = [[1], [2, 3, 4], [5], [6], [7], [8]]\n[[streams]]\nname = \"m\"\nfrom = \"n\"\nsteps = [{{ op = \"map\", udf = \"{}#{function}\" }}]\n[[sinks]]\nfrom = \"m\"\nkind = \"collect\"\n",
            common::udf("faulty").display()
        )
    }

    const HEALTHY: &str = "name = \"healthy\"\nbatch_interval = \"50ms\"\n[[sources]]\nname = \"g\"\nkind = \"generator\"\nrate = 1000\n[[streams]]\nname = \"c\"\nfrom = \"g\"\nsteps = [{ op = \"count\" }]\n[[sinks]]\nfrom = \"c\"\nkind = \"collect\"\n";

    /// Runs the faulty job next to a healthy one in one host; returns the faulty job's
    /// error and checks the healthy one computed batches after the failure.
    fn fails_alone(function: &str, limits: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let faulty_path = dir.path().join("faulty.toml");
        let healthy_path = dir.path().join("healthy.toml");
        std::fs::write(&faulty_path, faulty_job(function, limits)).unwrap();
        std::fs::write(&healthy_path, HEALTHY).unwrap();
        let tokio = tokio::runtime::Runtime::new().unwrap();
        tokio.block_on(async {
            let host = Host::new(RuntimeConfig {
                cache_dir: None,
                ..RuntimeConfig::default()
            })
            .unwrap();
            let mut healthy = host
                .start(host.load(&healthy_path).unwrap(), None, &Default::default())
                .unwrap();
            let faulty = host
                .start(host.load(&faulty_path).unwrap(), None, &Default::default())
                .unwrap();
            let error = faulty.finished().await.expect_err("the faulty job fails");
            let mut after = 0;
            while after < 5 {
                let report =
                    tokio::time::timeout(Duration::from_secs(10), healthy.reports.recv()).await;
                assert!(
                    matches!(report, Ok(Some(_))),
                    "the healthy job keeps producing batches"
                );
                after += 1;
            }
            healthy.stop();
            healthy
                .finished()
                .await
                .expect("the healthy job ends cleanly");
            format!("{error:#}")
        })
    }

    #[test]
    fn a_panicking_udf_fails_its_job_with_the_panic_message_and_record() {
        let error = fails_alone("panic_on_three", "");
        assert!(
            error.contains("job `faulty-panic_on_three` failed on the batch of time"),
            "{error}"
        );
        assert!(error.contains("stream `m` step 1 (map"), "{error}");
        assert!(
            error.contains("panicked: assertion `left != right` failed: three is not allowed"),
            "{error}"
        );
        assert!(error.contains("(record 1 of its partition)"), "{error}");
    }

    #[test]
    fn a_looping_udf_is_stopped_at_its_call_timeout() {
        let error = fails_alone("spin", "call_timeout = \"200ms\"");
        assert!(
            error.contains("did not finish within the call timeout of 200 ms"),
            "{error}"
        );
        assert!(error.contains("#spin`"), "{error}");
    }

    #[test]
    fn a_memory_bomb_is_stopped_at_its_memory_limit() {
        let error = fails_alone("hog", "memory = \"32MiB\"");
        assert!(
            error.contains("past the limit of 33554432 bytes (32.00 MiB)"),
            "{error}"
        );
    }
}

#[test]
fn compiled_components_are_cached_and_a_corrupt_cache_entry_is_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let inspect = || {
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .env("SLUICE_CACHE_DIR", cache.path())
            .args(["udf", "inspect", common::udf("wordcount").to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (listing, _) = inspect();
    for (name, kind) in [
        ("tokenize", "flat-map"),
        ("is_long_word", "filter"),
        ("with_one", "map"),
        ("sum", "reduce"),
        ("subtract", "reduce"),
    ] {
        assert!(
            listing
                .lines()
                .any(|line| line.split_whitespace().collect::<Vec<_>>() == [name, kind]),
            "{name} {kind} in {listing}"
        );
    }
    let cached: Vec<PathBuf> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
        .collect();
    assert_eq!(cached.len(), 1, "one compiled component cached: {cached:?}");
    assert!(
        cached[0].with_extension("cwasm.sha256").exists(),
        "sealed with its digest"
    );

    std::fs::write(&cached[0], b"not a compiled component").unwrap();
    let (again, log) = inspect();
    assert_eq!(again, listing, "the component still loads");
    assert!(
        log.contains("ignoring unreadable cached component"),
        "{log}"
    );
    assert!(
        std::fs::read(&cached[0]).unwrap().len() > 1000,
        "the entry was rewritten"
    );
}

#[test]
fn stdin_source_counts_until_end_of_input() {
    let dir = tempfile::tempdir().unwrap();
    let job = write_manifest(dir.path(), &wordcount_job("kind = \"stdin\"", dir.path()));
    let mut child = sluice()
        .args(["run", job.to_str().unwrap(), "--log", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"one two\ntwo\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "ends by itself at end of input: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        total_counts(&json_outputs(dir.path(), "counts")),
        counts(&[("one", 1), ("two", 2)])
    );
}

/// `sluice udf build` and a plain `cargo build` in the UDF workspace use the same flags
/// (the workspace's own `.cargo/config.toml`), so that neither rebuilds what the other
/// built.
#[test]
fn udf_build_and_plain_cargo_build_share_their_artifacts() {
    let udfs = common::root().join("udfs");
    let cargo = |what: &str| {
        let output = Command::new("cargo")
            .args(["build", "--release"])
            .current_dir(&udfs)
            .output()
            .unwrap();
        assert!(output.status.success(), "{what}: {output:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let udf_build = || {
        let output = sluice()
            .args(["udf", "build", udfs.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    // Whatever is out of date is built once here; from then on nothing is.
    cargo("the first cargo build");
    let after_cargo = udf_build();
    assert!(
        !after_cargo.contains("Compiling"),
        "`sluice udf build` after `cargo build` compiled again:\n{after_cargo}"
    );
    let after_udf_build = cargo("cargo build after `sluice udf build`");
    assert!(
        !after_udf_build.contains("Compiling"),
        "`cargo build` after `sluice udf build` compiled again:\n{after_udf_build}"
    );
    assert!(
        !after_cargo.contains("enables SIMD"),
        "the workspace's own configuration turns SIMD on:\n{after_cargo}"
    );
}
