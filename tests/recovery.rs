//! Recovery: crashes (`kill -9`) at random moments, a damaged write-ahead log, and
//! redeploys of new UDF versions onto a checkpointed job.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::sluice;
use common::wait;
use common::wordcount::{
    RUNNING_COUNT, Xorshift, counted, final_counts, sluice_run, stateful_word_count, text,
};
use serde_json::Value as Json;
use sluice::checkpoint::{Checkpointer, Cut, Recovery, RecoveryOptions};
use sluice::job::Job;
use sluice::runtime::{Runtime, RuntimeConfig};
use sluice_abi::Batch;

#[test]
fn killed_twenty_times_the_stateful_word_count_loses_and_duplicates_nothing() {
    let seed: u64 = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0x5eed_c0de);
    println!("seed {seed} (replay with SLUICE_CRASH_SEED={seed})");
    let mut random = Xorshift(seed | 1);
    let input = text(500, &mut random);

    let fault_free = tempfile::tempdir().unwrap();
    std::fs::write(fault_free.path().join("input.txt"), &input).unwrap();
    let manifest = stateful_word_count(fault_free.path(), "job.toml", "", RUNNING_COUNT);
    let output = sluice_run(&manifest, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (reference, _) = final_counts(fault_free.path());
    assert_eq!(
        reference,
        counted(&input),
        "the fault-free run counts every word once"
    );

    let crashed = tempfile::tempdir().unwrap();
    std::fs::write(crashed.path().join("input.txt"), &input).unwrap();
    let manifest = stateful_word_count(crashed.path(), "job.toml", "", RUNNING_COUNT);
    let mut kills = 0;
    while kills < 20 {
        let mut child = sluice()
            .args(["run", manifest.to_str().unwrap(), "--log", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100 + random.next() % 500));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended after {kills} kills: make it longer so that 20 land (seed {seed})"
        );
        child.kill().unwrap(); // SIGKILL: no chance to clean up.
        child.wait().unwrap();
        kills += 1;
    }
    // The log goes to a file: an unread pipe would fill up and stall the job.
    let log_path = crashed.path().join("last-run.log");
    let mut last = sluice()
        .args(["run", manifest.to_str().unwrap(), "--log", "json"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let status = wait::exit_within(&mut last, Duration::from_secs(120))
        .expect("the job finished within 120 s");
    assert!(
        status.success(),
        "the last run failed (seed {seed}): {}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    let (counts, _) = final_counts(crashed.path());
    assert_eq!(
        counts, reference,
        "after {kills} kills the totals differ from the fault-free run (seed {seed})"
    );
}

/// A job whose source the write-ahead log makes durable (a socket, never started here:
/// the test writes the log itself), counting records with updateStateByKey.
fn logged_job(dir: &Path, runtime: &Runtime, every: u64) -> Job {
    let manifest = format!(
        r#"name = "logged"
batch_interval = "1s"
partitions = 2
[checkpoint]
dir = "{dir}/checkpoint"
every = {every}
[udfs]
wc = "{wordcount}"
[[sources]]
name = "lines"
kind = "socket"
port = 9
[[streams]]
name = "counts"
from = "lines"
steps = [{{ op = "map", udf = "wc#with_one" }}, {{ op = "update_state_by_key", udf = "wc#running_count" }}]
[[sinks]]
name = "out"
from = "counts"
kind = "collect"
"#,
        dir = dir.display(),
        wordcount = common::udf("wordcount").display(),
    );
    let config = sluice::manifest::parse(&manifest, &dir.join("job.toml"), runtime).unwrap();
    Job::build(config, runtime).unwrap()
}

/// Batch `number` of the logged job: the words `w1`..`w<number>`.
fn words_up_to(number: u64) -> Batch {
    let mut records = Batch::new();
    (1..=number).for_each(|i| records.push(&format!("w{i}")).unwrap());
    records
}

/// The table `recover` gives after batches 1..=`last` of [`words_up_to`].
fn totals_after(last: u64) -> BTreeMap<String, i64> {
    (1..=last)
        .map(|i| (format!("w{i}"), (last - i + 1) as i64))
        .collect()
}

/// Logs batches 1..=4 (see [`words_up_to`]), then one record of batch 5, in the
/// checkpoint directory of [`logged_job`] (which makes it at its first start).
fn write_log(dir: &Path, runtime: &Runtime) -> PathBuf {
    let job = logged_job(dir, runtime, 100);
    let (checkpointer, _) = open(&job, false).unwrap();
    let wal = checkpointer.wal();
    let mut wal = wal.lock().unwrap();
    for number in 1..=4u64 {
        wal.records(0, &words_up_to(number)).unwrap();
        wal.cut(Cut {
            number,
            time_ms: number as i64 * 1000,
            positions: vec![None],
            ranges: Vec::new(),
        })
        .unwrap();
    }
    let mut late = Batch::new();
    late.push("late").unwrap();
    wal.records(0, &late).unwrap();
    dir.join("checkpoint/wal")
}

/// Opens the checkpoint directory of `job`, accepting data loss or not, with a log
/// segment file per batch (so that a test can damage one batch's file).
fn open(job: &Job, accept_data_loss: bool) -> anyhow::Result<(Checkpointer, Recovery)> {
    let config = job.config().checkpoint.clone().unwrap();
    let options = RecoveryOptions {
        accept_data_loss,
        wal_rolling: sluice::checkpoint::wal::Rolling::EVERY_BATCH,
        ..RecoveryOptions::default()
    };
    Checkpointer::open(&config, job, &options)
}

/// What [`recover`] found: the last state table, the records pending for the next batch,
/// the recovery notes and the batches it accepted to lose.
struct Recovered {
    table: BTreeMap<String, i64>,
    pending: Vec<String>,
    notes: Vec<String>,
    lost: Vec<String>,
}

/// Recovers `job` (accepting data loss or not) and re-runs what the log holds.
fn recover(job: &Job, accept_data_loss: bool) -> Recovered {
    let (checkpointer, recovery) = open(job, accept_data_loss).unwrap();
    let mut table = BTreeMap::new();
    for (cut, logged) in recovery.replay {
        job.process(cut.time_ms, logged).unwrap();
        checkpointer.completed(job, &cut).unwrap();
    }
    if let Some((_, records)) = job.collected().batches("out").last() {
        for record in records {
            let (word, count): (String, i64) = serde_json::from_str(&record.to_json()).unwrap();
            table.insert(word, count);
        }
    }
    let pending = recovery.pending[0]
        .iter()
        .map(|record| sluice_abi::Value::decode(record).unwrap().to_json())
        .collect();
    Recovered {
        table,
        pending,
        notes: recovery.notes,
        lost: recovery.lost.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_torn_wal_tail_keeps_every_record_before_the_tear() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = write_log(dir.path(), &runtime);
    // A crash in the middle of appending a second record of batch 5.
    let segment = wal_dir.join(format!("{:020}.log", 5));
    let mut bytes = std::fs::read(&segment).unwrap();
    let good = bytes.len();
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, 5, 6]);
    std::fs::write(&segment, &bytes).unwrap();

    let recovered = recover(&logged_job(dir.path(), &runtime, 100), false);
    let expected: BTreeMap<String, i64> = [("w1", 4), ("w2", 3), ("w3", 2), ("w4", 1)]
        .map(|(w, c)| (w.to_owned(), c))
        .into();
    assert_eq!(
        recovered.table, expected,
        "every logged batch is re-run once"
    );
    assert_eq!(
        recovered.pending,
        ["\"late\""],
        "the record before the tear is kept"
    );
    let notes = &recovered.notes;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("torn") && notes[0].contains("skipped 10 bytes"),
        "{notes:?}"
    );
    assert!(recovered.lost.is_empty(), "a torn write loses nothing");
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len() as usize,
        good,
        "the tear is cut off"
    );
}

/// Flips a bit in the last byte of batch 3's cut (its last frame): damage that is not a
/// torn write, since segments 4 and 5 come after it.
fn flip_batch_3_cut(wal_dir: &Path) -> PathBuf {
    let segment = wal_dir.join(format!("{:020}.log", 3));
    let mut bytes = std::fs::read(&segment).unwrap();
    *bytes.last_mut().unwrap() ^= 0x04;
    std::fs::write(&segment, &bytes).unwrap();
    segment
}

#[test]
fn a_bit_flipped_wal_record_is_data_loss_and_refused() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = write_log(dir.path(), &runtime);
    let segment = flip_batch_3_cut(&wal_dir);
    let before = std::fs::read(&segment).unwrap();

    let error = match open(&logged_job(dir.path(), &runtime, 100), false) {
        Ok(_) => panic!("recovery went on with batches 3 to 5 lost"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.contains("batches 3 to 5")
            && error.contains(&segment.display().to_string())
            && error.contains("checksum")
            && error.contains("--accept-data-loss"),
        "{error}"
    );
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        before,
        "nothing is changed"
    );
    assert!(!wal_dir.join(format!("{:020}.log.skipped", 4)).exists());
}

#[test]
fn a_bit_flipped_wal_record_with_accept_data_loss_stops_recovery_at_the_last_good_record() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = write_log(dir.path(), &runtime);
    flip_batch_3_cut(&wal_dir);

    let recovered = recover(&logged_job(dir.path(), &runtime, 100), true);
    let expected: BTreeMap<String, i64> = [("w1", 2), ("w2", 1)]
        .map(|(w, c)| (w.to_owned(), c))
        .into();
    assert_eq!(recovered.table, expected, "batches 1 and 2 are re-run");
    assert_eq!(
        recovered.pending,
        ["\"w1\"", "\"w2\"", "\"w3\""],
        "batch 3's records, whose cut is lost, go into the next batch"
    );
    assert_eq!(recovered.lost.len(), 1, "{:?}", recovered.lost);
    assert!(
        recovered.lost[0].starts_with("batches 3 to 5") && recovered.lost[0].contains("checksum"),
        "{:?}",
        recovered.lost
    );
    for number in [4, 5] {
        assert!(
            wal_dir.join(format!("{number:020}.log.skipped")).exists(),
            "batch {number} is set aside, not deleted"
        );
    }
}

#[test]
fn a_damaged_newest_checkpoint_falls_back_to_the_previous_one() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    {
        let job = logged_job(dir.path(), &runtime, 2);
        let (checkpointer, _) = open(&job, false).unwrap();
        for number in 1..=5u64 {
            let records = words_up_to(number);
            let cut = Cut {
                number,
                time_ms: number as i64 * 1000,
                positions: vec![None],
                ranges: Vec::new(),
            };
            let wal = checkpointer.wal();
            let mut wal = wal.lock().unwrap();
            wal.records(0, &records).unwrap();
            wal.cut(cut.clone()).unwrap();
            drop(wal);
            job.process(cut.time_ms, vec![records]).unwrap();
            checkpointer.completed(&job, &cut).unwrap();
        }
    }
    let newest = dir.path().join(format!("checkpoint/state/{:020}.ckpt", 4));
    let mut bytes = std::fs::read(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&newest, &bytes).unwrap();

    let recovered = recover(&logged_job(dir.path(), &runtime, 2), false);
    assert_eq!(
        recovered.table,
        totals_after(5),
        "the checkpoint of batch 2 and batches 3 to 5 from the log give the same totals"
    );
    assert!(recovered.pending.is_empty() && recovered.lost.is_empty());
    let notes = &recovered.notes;
    assert!(
        notes[0].contains("is damaged")
            && notes[0].contains("fell back to the previous checkpoint"),
        "{notes:?}"
    );
}

/// `wordcount.wasm` rebuilt (a new digest), as a file in `dir`.
fn new_release(dir: &Path) -> PathBuf {
    let wasm = std::fs::read(common::udf("wordcount")).unwrap();
    let path = dir.join("wordcount-v2.wasm");
    std::fs::write(&path, common::release::new_release(&wasm, b'2')).unwrap();
    path
}

#[test]
fn a_redeploy_keeps_the_running_counts_and_an_incompatible_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut random = Xorshift(7);
    let input = text(30, &mut random);
    std::fs::write(dir.path().join("input.txt"), &input).unwrap();
    let first = stateful_word_count(dir.path(), "job.toml", "", RUNNING_COUNT);
    let output = sluice_run(&first, &["--batches", "12"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (after_twelve, _) = final_counts(dir.path());
    let first_twelve: String = input.lines().take(12).collect::<Vec<_>>().join("\n");
    assert_eq!(after_twelve, counted(&first_twelve));

    let inspect = sluice()
        .args(["checkpoint", "inspect"])
        .arg(dir.path().join("checkpoint"))
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&inspect.stdout);
    let digest = {
        use sha2::Digest;
        format!(
            "{:x}",
            sha2::Sha256::digest(std::fs::read(common::udf("wordcount")).unwrap())
        )
    };
    assert!(shown.contains("job: wordcount"), "{shown}");
    let instance = std::fs::read(dir.path().join("checkpoint/metadata.json")).unwrap();
    let instance: Json = serde_json::from_slice(&instance).unwrap();
    assert!(
        shown.contains(&format!(
            "instance: {} (checkpoint format 2",
            instance["instance"].as_str().unwrap()
        )),
        "{shown}"
    );
    assert!(shown.contains("last completed batch: 12"), "{shown}");
    // State checkpoints every 5 batches: the newest covers batches 1..=10.
    let first_ten: String = input.lines().take(10).collect::<Vec<_>>().join("\n");
    assert!(
        shown.contains(&format!(
            "step counts/3 (update_state_by_key): {} entries",
            counted(&first_ten).len()
        )),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("wc#running_count  sha256 {digest}")),
        "{shown}"
    );

    // A step of another kind where the state was: refused, saying what changed and how
    // to go on anyway.
    let conformance = format!("c = \"{}\"", common::udf("conformance").display());
    let changed = stateful_word_count(
        dir.path(),
        "changed.toml",
        &conformance,
        r#"{ op = "map_with_state", udf = "c#running_count_emit_count" }"#,
    );
    let refused = sluice_run(&changed, &[]);
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        error.contains(
            "step `counts/3` kept update_state_by_key state, and is now a map_with_state step"
        ) && error.contains("--fresh-state"),
        "{error}"
    );

    // The same UDFs rebuilt (a new digest): the job resumes with its counts.
    let release = new_release(dir.path());
    let redeployed = std::fs::read_to_string(&first).unwrap().replace(
        &common::udf("wordcount").display().to_string(),
        &release.display().to_string(),
    );
    std::fs::write(&first, redeployed).unwrap();
    let output = sluice_run(&first, &[]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("was redeployed"), "{log}");
    let (resumed, _) = final_counts(dir.path());
    assert_eq!(
        resumed,
        counted(&input),
        "the counts carry on from batch 12"
    );

    // The incompatible change again, now asking for fresh state: it starts from zero.
    let output = sluice_run(&changed, &["--fresh-state", "counts/3"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn re_run_batches_join_with_the_whole_table_again() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.txt"), "a\nb\nc").unwrap();
    std::fs::write(
        dir.path().join("fruits.jsonl"),
        "[\"a\", \"apple\"]\n[\"b\", \"banana\"]\n[\"c\", \"cherry\"]\n",
    )
    .unwrap();
    let manifest = format!(
        r#"name = "join"
batch_interval = "50ms"
[checkpoint]
dir = "checkpoint"
every = 100
[udfs]
wc = "{}"
[[sources]]
name = "lines"
kind = "file"
path = "input.txt"
lines_per_batch = 1
[[sources]]
name = "fruits"
kind = "table"
path = "fruits.jsonl"
[[streams]]
name = "named"
from = "lines"
steps = [{{ op = "map", udf = "wc#with_one" }}, {{ op = "join", other = "fruits" }}]
[[sinks]]
from = "named"
kind = "files"
prefix = "out/named"
suffix = "jsonl"
format = "json_lines"
"#,
        common::udf("wordcount").display()
    );
    let path = dir.path().join("job.toml");
    std::fs::write(&path, manifest).unwrap();
    let joined = || -> Vec<String> {
        common::files_by_name(&dir.path().join("out"))
            .into_iter()
            .map(|(_, text)| text.trim().to_owned())
            .filter(|text| !text.is_empty())
            .collect()
    };
    let output = sluice_run(&path, &["--batches", "2"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let first = joined();
    assert_eq!(first, [r#"["a",[1,"apple"]]"#, r#"["b",[1,"banana"]]"#]);
    // No state checkpoint yet (every 100 batches): the restart re-runs batches 1 and 2
    // from the log, the table side included, and rewrites their files.
    let output = sluice_run(&path, &[]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(
        log.contains("re-running the batches cut before the restart"),
        "{log}"
    );
    assert_eq!(
        joined(),
        [
            r#"["a",[1,"apple"]]"#,
            r#"["b",[1,"banana"]]"#,
            r#"["c",[1,"cherry"]]"#
        ]
    );
}
