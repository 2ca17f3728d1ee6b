//! Recovery from damaged, foreign and rewound checkpoint directories, on a job without
//! UDFs whose one source is logged (a socket that is never started: the tests write the
//! log as its receiver would).

use std::path::{Path, PathBuf};

use sluice_abi::Batch;

use super::*;
use crate::runtime::{Runtime, RuntimeConfig};

struct Fixture {
    _temp: tempfile::TempDir,
    root: PathBuf,
    runtime: std::sync::Arc<Runtime>,
    rolling: wal::Rolling,
}

impl Fixture {
    /// A fixture whose log has a segment file per batch, so that a test can damage one
    /// batch's file.
    fn new() -> Self {
        Self::rolling(wal::Rolling::EVERY_BATCH)
    }

    fn rolling(rolling: wal::Rolling) -> Self {
        let temp = tempfile::tempdir().unwrap();
        Self {
            root: temp.path().to_owned(),
            _temp: temp,
            runtime: Runtime::new(RuntimeConfig::default()).unwrap(),
            rolling,
        }
    }

    fn dir(&self) -> PathBuf {
        self.root.join("checkpoint")
    }

    fn segment(&self, number: u64) -> PathBuf {
        wal::segment_path(&self.dir().join("wal"), number)
    }

    fn checkpoint(&self, number: u64) -> PathBuf {
        snapshot::path_of(&self.dir().join("state"), number)
    }

    fn job(&self, every: u64) -> Job {
        let manifest = format!(
            r#"name = "logged"
batch_interval = "1s"
[checkpoint]
dir = "{}"
every = {every}
[[sources]]
name = "lines"
kind = "socket"
port = 9
[[sinks]]
name = "out"
from = "lines"
kind = "collect"
"#,
            self.dir().display()
        );
        let config =
            crate::manifest::parse(&manifest, &self.root.join("job.toml"), &self.runtime).unwrap();
        Job::build(config, &self.runtime).unwrap()
    }

    fn open(&self, job: &Job, accept_data_loss: bool) -> Result<(Checkpointer, Recovery)> {
        let config = job.config().checkpoint.clone().unwrap();
        let options = RecoveryOptions {
            accept_data_loss,
            wal_rolling: self.rolling,
            ..RecoveryOptions::default()
        };
        Checkpointer::open(&config, job, &options)
    }

    /// Opens the directory, re-runs what recovery found, then logs and runs batches up
    /// to `last` (batch `n` holds the record `"b<n>"`).
    fn run_to(&self, every: u64, last: u64) -> Ran {
        let job = self.job(every);
        let (checkpointer, mut recovery) = self.open(&job, false).unwrap();
        let mut replayed = Vec::new();
        for (cut, inputs) in std::mem::take(&mut recovery.replay) {
            job.process(cut.time_ms, inputs).unwrap();
            checkpointer.completed(&job, &cut).unwrap();
            replayed.push(cut.number);
        }
        for number in recovery.next_number..=last {
            let cut = Cut {
                number,
                time_ms: number as i64 * 1000,
                positions: vec![None],
                ranges: Vec::new(),
            };
            let wal = checkpointer.wal();
            let mut wal = wal.lock().unwrap();
            wal.records(0, &record(number)).unwrap();
            wal.cut(cut.clone()).unwrap();
            drop(wal);
            job.process(cut.time_ms, vec![record(number)]).unwrap();
            checkpointer.completed(&job, &cut).unwrap();
        }
        Ran { recovery, replayed }
    }

    /// What recovery refuses, as a message.
    fn refusal(&self, every: u64) -> String {
        match self.open(&self.job(every), false) {
            Ok(_) => panic!("recovery was not refused"),
            Err(error) => format!("{error:#}"),
        }
    }

    /// The batch numbers recovery would re-run.
    fn replayed(recovery: &Recovery) -> Vec<u64> {
        recovery.replay.iter().map(|(cut, _)| cut.number).collect()
    }
}

/// What [`Fixture::run_to`] found: the recovery, and the batches it re-ran.
#[derive(Debug)]
struct Ran {
    recovery: Recovery,
    replayed: Vec<u64>,
}

/// Fails if this process ever held `limit` bytes or more of memory (its peak resident
/// set, which the kernel keeps).
pub(super) fn assert_peak_memory_below(limit: u64) {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("/proc/self/status gives VmHWM");
    assert!(peak_kib * 1024 < limit, "peak memory {peak_kib} KiB");
}

fn record(number: u64) -> Batch {
    let mut batch = Batch::new();
    batch.push(&format!("b{number}")).unwrap();
    batch
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// After a first run to batch 7 (checkpoints every 3 batches): a second run to 10 restores
/// checkpoint 6 and replays batch 7, a third restores 9 and replays 10, with nothing lost.
fn restart_twice_from_checkpoints_6_and_9(fixture: &Fixture) {
    let second = fixture.run_to(3, 10);
    assert_eq!(second.recovery.restored.map(|(number, _)| number), Some(6));
    assert_eq!(second.replayed, [7]);
    let third = fixture.run_to(3, 10);
    assert_eq!(third.recovery.restored.map(|(number, _)| number), Some(9));
    assert_eq!(third.replayed, [10]);
    assert!(
        third.recovery.notes.is_empty() && third.recovery.lost.is_empty(),
        "{third:?}"
    );
}

#[test]
fn restarts_go_on_along_the_chain_across_forgotten_segments() {
    let fixture = Fixture::new();
    let first = fixture.run_to(3, 7);
    assert!(first.recovery.made_instance.is_some());
    restart_twice_from_checkpoints_6_and_9(&fixture);
    // Segments the two kept checkpoints (6 and 9) cover are gone; the chain still holds.
    assert!(!fixture.segment(6).exists() && fixture.segment(7).exists());
}

#[test]
fn segments_of_many_batches_follow_the_checkpoints_and_the_chain_holds_across_restarts() {
    let fixture = Fixture::rolling(wal::Rolling::default());
    let wal_dir = fixture.dir().join("wal");
    fixture.run_to(3, 7);
    // Checkpoints 3 and 6 are kept; the log rolled after each: 1-3 (gone, as checkpoint 3
    // covers it), 4-6, and 7 with the header of 8.
    assert_eq!(
        files(&wal_dir),
        [4, 7].map(|n| format!("{n:020}.log")),
        "segments roll at checkpoints"
    );
    restart_twice_from_checkpoints_6_and_9(&fixture);
    assert_eq!(
        files(&wal_dir),
        [7, 10].map(|n| format!("{n:020}.log")),
        "a segment goes once both kept checkpoints (6 and 9) cover all its batches"
    );
}

#[test]
fn a_segment_copied_or_renamed_to_another_number_is_refused_naming_it() {
    let fixture = Fixture::new();
    fixture.run_to(100, 5);
    let copy = |from: u64, to: u64| fs::copy(fixture.segment(from), fixture.segment(to)).unwrap();
    // Past the newest segment (6), over a middle one, and onto the newest.
    for (from, to, what) in [
        (2, 9, "holds batch 2, not 9"),
        (2, 4, "holds batch 2, not 4"),
        (5, 6, "holds batch 5, not 6"),
    ] {
        let saved = fs::read(fixture.segment(to)).ok();
        copy(from, to);
        let error = fixture.refusal(100);
        assert!(
            error.contains(&fixture.segment(to).display().to_string()) && error.contains(what),
            "{error}"
        );
        match saved {
            Some(bytes) => fs::write(fixture.segment(to), bytes).unwrap(),
            None => fs::remove_file(fixture.segment(to)).unwrap(),
        }
    }
    fs::rename(fixture.segment(3), fixture.segment(30)).unwrap();
    let error = fixture.refusal(100);
    assert!(
        error.contains(&fixture.segment(30).display().to_string()),
        "{error}"
    );
}

#[test]
fn a_missing_segment_is_data_loss_refused_unless_accepted() {
    let fixture = Fixture::new();
    fixture.run_to(100, 5);
    fs::remove_file(fixture.segment(3)).unwrap();
    let before = files(&fixture.dir().join("wal"));
    let error = fixture.refusal(100);
    assert!(
        error.contains("batches 3 to 6")
            && error.contains(&format!("{} is missing", fixture.segment(3).display()))
            && error.contains("--accept-data-loss"),
        "{error}"
    );
    assert_eq!(
        files(&fixture.dir().join("wal")),
        before,
        "nothing is changed"
    );

    let (_, recovery) = fixture.open(&fixture.job(100), true).unwrap();
    assert_eq!(Fixture::replayed(&recovery), [1, 2]);
    assert_eq!(recovery.lost.len(), 1);
    assert_eq!((recovery.lost[0].first, recovery.lost[0].last), (3, 6));
    assert!(fixture.segment(4).with_extension("log.skipped").exists());
    // The next start goes on from there without a word.
    let again = fixture.run_to(100, 4);
    assert!(
        again.recovery.lost.is_empty() && again.recovery.notes.is_empty(),
        "{again:?}"
    );
}

#[test]
fn a_checkpoint_of_another_run_of_the_same_job_is_refused_naming_it() {
    let (ours, theirs) = (Fixture::new(), Fixture::new());
    ours.run_to(2, 5);
    theirs.run_to(2, 5);
    let saved = fs::read(ours.checkpoint(4)).unwrap();
    fs::copy(theirs.checkpoint(4), ours.checkpoint(4)).unwrap();
    let error = ours.refusal(2);
    assert!(
        error.contains(&ours.checkpoint(4).display().to_string())
            && error.contains("another job or another run"),
        "{error}"
    );
    fs::write(ours.checkpoint(4), saved).unwrap();
    // Their segment, then their instance file (every file of ours then looks foreign).
    for path in [ours.segment(5), instance::path(&ours.dir())] {
        let saved = fs::read(&path).unwrap();
        let theirs = theirs.dir().join(path.strip_prefix(ours.dir()).unwrap());
        fs::copy(theirs, &path).unwrap();
        let error = ours.refusal(2);
        assert!(error.contains(&path.display().to_string()), "{error}");
        fs::write(&path, saved).unwrap();
    }
}

#[test]
fn a_checkpoint_renamed_to_another_batch_is_refused() {
    let fixture = Fixture::new();
    fixture.run_to(2, 5);
    fs::rename(fixture.checkpoint(4), fixture.checkpoint(8)).unwrap();
    let error = fixture.refusal(2);
    assert!(
        error.contains(&fixture.checkpoint(8).display().to_string())
            && error.contains("covers batches up to 4"),
        "{error}"
    );
}

#[test]
fn no_usable_checkpoint_for_batches_the_log_no_longer_holds_is_data_loss() {
    let fixture = Fixture::new();
    fixture.run_to(2, 5);
    for number in [2, 4] {
        fs::write(fixture.checkpoint(number), b"").unwrap();
    }
    let error = fixture.refusal(2);
    assert!(
        error.contains("batches 1 to 2")
            && error.contains("no state checkpoint is usable")
            && error.contains(&fixture.checkpoint(4).display().to_string()),
        "{error}"
    );
    let (_, recovery) = fixture.open(&fixture.job(2), true).unwrap();
    assert_eq!(Fixture::replayed(&recovery), [3, 4, 5]);
    assert_eq!(recovery.lost[0].last, 2);
}

#[test]
fn a_damaged_newest_checkpoint_falls_back_when_the_log_covers_it() {
    let fixture = Fixture::new();
    fixture.run_to(2, 5);
    fs::remove_file(fixture.checkpoint(4)).unwrap();
    let (_, recovery) = fixture.open(&fixture.job(2), false).unwrap();
    assert_eq!(recovery.restored.map(|(number, _)| number), Some(2));
    assert_eq!(Fixture::replayed(&recovery), [3, 4, 5]);
}

#[test]
fn a_whole_older_copy_of_the_directory_rewinds_the_job() {
    let fixture = Fixture::new();
    fixture.run_to(2, 3);
    let backup = fixture.root.join("backup");
    copy_dir(&fixture.dir(), &backup);
    fixture.run_to(2, 8);
    fs::remove_dir_all(fixture.dir()).unwrap();
    copy_dir(&backup, &fixture.dir());
    let rewound = fixture.run_to(2, 4);
    assert_eq!(rewound.recovery.restored.map(|(number, _)| number), Some(2));
    assert_eq!(rewound.replayed, [3]);
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn a_torn_newest_segment_header_is_cut_back_and_written_again() {
    let fixture = Fixture::new();
    fixture.run_to(100, 3);
    let newest = fixture.segment(4);
    let bytes = fs::read(&newest).unwrap();
    fs::write(&newest, &bytes[..5]).unwrap();
    let ran = fixture.run_to(100, 4);
    assert_eq!(ran.replayed, [1, 2, 3]);
    assert!(ran.recovery.notes[0].contains("torn"), "{ran:?}");
    let again = fixture.run_to(100, 4);
    assert!(again.recovery.notes.is_empty(), "{again:?}");
}

#[test]
fn stale_temporary_files_are_removed_and_reported() {
    let fixture = Fixture::new();
    fixture.run_to(2, 3);
    let stale = [
        fixture.checkpoint(4).with_extension("ckpt.tmp"),
        fixture.dir().join("metadata.json.tmp"),
    ];
    for path in &stale {
        fs::write(path, b"half written").unwrap();
    }
    let recovery = fixture.run_to(2, 3).recovery;
    for path in &stale {
        assert!(!path.exists());
        assert!(
            recovery
                .notes
                .iter()
                .any(|note| note.contains(&path.display().to_string())),
            "{:?}",
            recovery.notes
        );
    }
}

#[test]
fn stray_files_are_not_the_log() {
    let fixture = Fixture::new();
    fixture.run_to(2, 3);
    for stray in ["wal/notes.txt", "wal/7.log", "state/backup.ckpt", "junk"] {
        fs::write(fixture.dir().join(stray), b"junk").unwrap();
    }
    let ran = fixture.run_to(2, 3);
    assert!(
        ran.recovery.notes.is_empty() && ran.recovery.lost.is_empty(),
        "{ran:?}"
    );
    assert_eq!(ran.replayed, [3]);
}
