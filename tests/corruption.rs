//! Seeded random damage to the checkpoint directory of a stopped stateful word count,
//! then a restart: every outcome must be the exact totals or a refusal that names the
//! damaged file, never a wrong result. Also `--accept-data-loss`, end to end.
//!
//! `SLUICE_CORRUPTION_SEED` replays a run, `SLUICE_CORRUPTION_TRIALS` sets its size.

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::sluice;
use common::wait;
use common::wordcount::{
    RUNNING_COUNT, Xorshift, counted, final_counts, sluice_run, stateful_word_count, text,
};

/// Lines of input: one per batch.
const LINES: usize = 40;
/// The batches the damaged jobs stopped after (`--batches`), one base directory each: at
/// a state checkpoint (every 5 batches), and two batches after one, so that the log holds
/// batches the checkpoint does not cover.
const STOPPED_AFTER: [&str; 2] = ["20", "22"];
/// Trials run at once.
const PARALLEL: usize = 2;

/// A job's folder (manifest, input, checkpoint directory, outputs) as `--batches N` left
/// it.
struct Base {
    dir: tempfile::TempDir,
    input: String,
}

impl Base {
    /// Runs the word count named `name` over `LINES` lines made from `seed`, for
    /// `batches` batches.
    fn make(name: &str, seed: u64, batches: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let input = text(LINES, &mut Xorshift(seed));
        std::fs::write(dir.path().join("input.txt"), &input).unwrap();
        let manifest = stateful_word_count(dir.path(), "job.toml", "", RUNNING_COUNT);
        let renamed = std::fs::read_to_string(&manifest)
            .unwrap()
            .replace(r#"name = "wordcount""#, &format!(r#"name = "{name}""#));
        std::fs::write(&manifest, renamed).unwrap();
        let output = sluice_run(&manifest, &["--batches", batches]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Self { dir, input }
    }

    fn checkpoint(&self) -> PathBuf {
        self.dir.path().join("checkpoint")
    }

    /// A copy of the job's folder to damage.
    fn copy(&self) -> tempfile::TempDir {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(self.dir.path(), copy.path());
        copy
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The files of checkpoint directory `dir`, relative to it, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for sub in ["", "wal", "state"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                found.push(if sub.is_empty() {
                    name
                } else {
                    format!("{sub}/{name}")
                });
            }
        }
    }
    found.sort();
    found
}

fn segment(number: u64) -> String {
    format!("wal/{number:020}.log")
}

fn checkpoint_file(number: u64) -> String {
    format!("state/{number:020}.ckpt")
}

/// The classes of damage, as the issue's trials had them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    FlippedBytes,
    Truncated,
    Deleted,
    SwappedIn,
    Metadata,
    ZeroLength,
    StrayJunk,
    SegmentCopiedOrRenamed,
}

const CLASSES: [Class; 8] = [
    Class::FlippedBytes,
    Class::Truncated,
    Class::Deleted,
    Class::SwappedIn,
    Class::Metadata,
    Class::ZeroLength,
    Class::StrayJunk,
    Class::SegmentCopiedOrRenamed,
];

/// What one trial did to the directory.
struct Damage {
    class: Class,
    /// What was done, for the report.
    what: String,
    /// The files changed, made or removed (relative to the checkpoint directory): a
    /// refusal must name one of them.
    files: Vec<String>,
    /// Whether the issue requires the exact totals after it: stray files, metadata, a
    /// torn newest tail, a damaged newest checkpoint with its predecessor and the log
    /// intact.
    must_be_exact: bool,
}

/// A base directory to damage, and those files are swapped in from: another run of the
/// same job (the same input), and another job; all stopped after the same batch.
struct Variant {
    base: Base,
    another_run: Base,
    another_job: Base,
}

impl Variant {
    fn make(batches: &str) -> Self {
        Self {
            base: Base::make("wordcount", 11, batches),
            another_run: Base::make("wordcount", 11, batches),
            another_job: Base::make("other", 12, batches),
        }
    }
}

/// Damages checkpoint directory `dir` with damage of `class`.
fn damage(dir: &Path, class: Class, random: &mut Xorshift, others: &Variant) -> Damage {
    let all = files(dir);
    let pick = |random: &mut Xorshift, among: &[String]| -> String {
        among[(random.next() % among.len() as u64) as usize].clone()
    };
    let newest_checkpoint = all
        .iter()
        .filter(|f| f.starts_with("state/"))
        .max()
        .cloned();
    let path = |file: &str| dir.join(file);
    // A damaged newest checkpoint with its predecessor and the log intact ends exact, and
    // so does any damage of the newest segment while it holds only its header (a torn
    // write of its only frame).
    let only_header = |file: &String| {
        let bytes = std::fs::read(path(file)).unwrap();
        sluice::checkpoint::frame::read(&bytes).0.len() == 1
    };
    let newest_segment = all
        .iter()
        .filter(|f| f.starts_with("wal/"))
        .max()
        .filter(|file| only_header(file))
        .cloned();
    let recoverable = |file: &str| {
        Some(file) == newest_checkpoint.as_deref() || Some(file) == newest_segment.as_deref()
    };
    match class {
        Class::FlippedBytes => {
            let nonempty: Vec<String> = all
                .iter()
                .filter(|f| std::fs::metadata(path(f)).unwrap().len() > 0)
                .cloned()
                .collect();
            let file = pick(random, &nonempty);
            let mut bytes = std::fs::read(path(&file)).unwrap();
            let flips = 1 + random.next() % 3;
            for _ in 0..flips {
                let at = (random.next() % bytes.len() as u64) as usize;
                bytes[at] ^= 1 + (random.next() % 255) as u8;
            }
            std::fs::write(path(&file), bytes).unwrap();
            Damage {
                class,
                what: format!("{flips} byte(s) of {file} flipped"),
                must_be_exact: recoverable(&file) || is_free(&file),
                files: vec![file],
            }
        }
        Class::Truncated => {
            let longer: Vec<String> = all
                .iter()
                .filter(|f| std::fs::metadata(path(f)).unwrap().len() > 1)
                .cloned()
                .collect();
            let file = pick(random, &longer);
            let len = std::fs::metadata(path(&file)).unwrap().len();
            let keep = 1 + random.next() % (len - 1);
            std::fs::OpenOptions::new()
                .write(true)
                .open(path(&file))
                .unwrap()
                .set_len(keep)
                .unwrap();
            Damage {
                class,
                what: format!("{file} cut to {keep} of {len} bytes"),
                must_be_exact: recoverable(&file) || is_free(&file),
                files: vec![file],
            }
        }
        Class::Deleted => {
            let file = pick(random, &all);
            std::fs::remove_file(path(&file)).unwrap();
            Damage {
                class,
                what: format!("{file} deleted"),
                must_be_exact: recoverable(&file) || is_free(&file),
                files: vec![file],
            }
        }
        Class::SwappedIn => {
            let (other, whose) = if random.next().is_multiple_of(2) {
                (&others.another_run, "another run of this job")
            } else {
                (&others.another_job, "another job")
            };
            let theirs = files(&other.checkpoint());
            let common: Vec<String> = all.iter().filter(|f| theirs.contains(f)).cloned().collect();
            let file = pick(random, &common);
            std::fs::copy(other.checkpoint().join(&file), path(&file)).unwrap();
            Damage {
                class,
                what: format!("{file} swapped in from {whose}"),
                must_be_exact: is_free(&file),
                files: vec![file],
            }
        }
        Class::Metadata => {
            let file = "metadata.json".to_owned();
            let what = match random.next() % 4 {
                0 => {
                    std::fs::write(path(&file), b"{ not json").unwrap();
                    "metadata.json made invalid JSON"
                }
                1 => {
                    std::fs::copy(others.another_job.checkpoint().join(&file), path(&file))
                        .unwrap();
                    "metadata.json of another job"
                }
                2 => {
                    let text = std::fs::read_to_string(path(&file)).unwrap();
                    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
                    json["last_completed_batch"]["number"] = 999.into();
                    json["instance"] = "00".repeat(16).into();
                    json["job"] = "someone else".into();
                    std::fs::write(path(&file), json.to_string()).unwrap();
                    "metadata.json with a wrong batch, instance and job"
                }
                _ => {
                    let junk: Vec<u8> = (0..200).map(|_| random.next() as u8).collect();
                    std::fs::write(path(&file), junk).unwrap();
                    "metadata.json made random bytes"
                }
            };
            Damage {
                class,
                what: what.to_owned(),
                files: vec![file],
                must_be_exact: true,
            }
        }
        Class::ZeroLength => {
            let file = pick(random, &all);
            std::fs::write(path(&file), b"").unwrap();
            Damage {
                class,
                what: format!("{file} made empty"),
                must_be_exact: recoverable(&file) || is_free(&file),
                files: vec![file],
            }
        }
        Class::StrayJunk => {
            const STRAY: &[&str] = &[
                "notes.txt",
                "wal/README",
                "wal/00000000000000000021.log.orig",
                "wal/21.log",
                "wal/.00000000000000000021.log.swp",
                "state/00000000000000000020.ckpt.bak",
                "state/latest.ckpt",
                "state/00000000000000000025.ckpt.tmp",
                "metadata.json.tmp",
                "instance.tmp",
                "core",
            ];
            let count = 1 + random.next() % 3;
            let mut made = Vec::new();
            for _ in 0..count {
                let file = STRAY[(random.next() % STRAY.len() as u64) as usize];
                let junk: Vec<u8> = (0..random.next() % 300)
                    .map(|_| random.next() as u8)
                    .collect();
                std::fs::write(path(file), junk).unwrap();
                made.push(file.to_owned());
            }
            Damage {
                class,
                what: format!("stray files {}", made.join(", ")),
                files: made,
                must_be_exact: true,
            }
        }
        Class::SegmentCopiedOrRenamed => {
            let segments: Vec<String> = all
                .iter()
                .filter(|f| f.starts_with("wal/"))
                .cloned()
                .collect();
            let from = pick(random, &segments);
            let number: u64 = from[4..24].parse().unwrap();
            const MOVES: [i64; 8] = [-3, -2, -1, 1, 2, 3, 20, 100];
            let to = segment(
                (number as i64 + MOVES[(random.next() % MOVES.len() as u64) as usize]).max(1)
                    as u64,
            );
            let renamed = random.next().is_multiple_of(2);
            if renamed {
                std::fs::rename(path(&from), path(&to)).unwrap();
            } else {
                std::fs::copy(path(&from), path(&to)).unwrap();
            }
            Damage {
                class,
                what: format!(
                    "{from} {} as {to}",
                    if renamed { "renamed" } else { "copied" }
                ),
                files: vec![from, to],
                must_be_exact: false,
            }
        }
    }
}

/// Files whose damage recovery never depends on: the lock (its pid is only for a
/// message) and the metadata (for people).
fn is_free(file: &str) -> bool {
    file == "lock" || file == "metadata.json"
}

/// How a trial ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Correct,
    Refused,
    /// Refused without naming any damaged file.
    RefusedUnnamed,
    WrongWithWarning,
    WrongSilently,
    /// A crash, a hang, or an exit code that is neither success nor an error.
    Broken,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Correct => "correct",
            Outcome::Refused => "refused",
            Outcome::RefusedUnnamed => "refused, file unnamed",
            Outcome::WrongWithWarning => "wrong, with a warning",
            Outcome::WrongSilently => "wrong, silently",
            Outcome::Broken => "crashed or hung",
        })
    }
}

/// Restarts the job in `dir` and judges the outcome against `input`.
fn restart(dir: &Path, input: &str, damage: &Damage) -> (Outcome, String) {
    let log = dir.join("restart.log");
    let mut child = sluice()
        .args(["run", "--log", "text"])
        .arg(dir.join("job.toml"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let status = wait::exit_within(&mut child, Duration::from_secs(60));
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let outcome = match status.map(|status| status.code()) {
        Some(Some(0)) if final_counts(dir).0 == counted(input) => Outcome::Correct,
        Some(Some(0)) if stderr.contains("WARN") || stderr.contains("ERROR") => {
            Outcome::WrongWithWarning
        }
        Some(Some(0)) => Outcome::WrongSilently,
        Some(Some(1)) => {
            let named = damage
                .files
                .iter()
                .any(|file| stderr.contains(&format!("checkpoint/{file}")));
            if named {
                Outcome::Refused
            } else {
                Outcome::RefusedUnnamed
            }
        }
        _ => Outcome::Broken,
    };
    (outcome, stderr)
}

#[test]
fn random_damage_to_a_stopped_job_ends_exact_or_refused_naming_the_file() {
    let seed: u64 = std::env::var("SLUICE_CORRUPTION_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0xc0ff_ee15);
    let trials: usize = std::env::var("SLUICE_CORRUPTION_TRIALS")
        .ok()
        .and_then(|trials| trials.parse().ok())
        .unwrap_or(320);
    println!("seed {seed} (replay with SLUICE_CORRUPTION_SEED={seed}), {trials} trials");
    let started = Instant::now();
    let variants: Vec<Variant> = STOPPED_AFTER
        .iter()
        .map(|batches| Variant::make(batches))
        .collect();

    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL {
            scope.spawn(|| {
                loop {
                    let trial = next.fetch_add(1, Ordering::Relaxed);
                    if trial >= trials {
                        return;
                    }
                    let mut random = Xorshift((seed ^ ((trial as u64 + 1) * 0x9e37_79b9)) | 1);
                    let class = CLASSES[trial % CLASSES.len()];
                    let variant = &variants[trial / CLASSES.len() % variants.len()];
                    let copy = variant.base.copy();
                    let dir = copy.path().join("checkpoint");
                    let damage = damage(&dir, class, &mut random, variant);
                    let (outcome, stderr) = restart(copy.path(), &variant.base.input, &damage);
                    results
                        .lock()
                        .unwrap()
                        .push((trial, damage, outcome, stderr));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(trial, ..)| *trial);

    let mut table: BTreeMap<Class, BTreeMap<Outcome, usize>> = BTreeMap::new();
    for (trial, damage, outcome, _) in &results {
        println!("trial {trial:>3}: {:<60} {outcome}", damage.what);
        *table
            .entry(damage.class)
            .or_default()
            .entry(*outcome)
            .or_default() += 1;
    }
    let outcomes = [
        Outcome::Correct,
        Outcome::Refused,
        Outcome::RefusedUnnamed,
        Outcome::WrongWithWarning,
        Outcome::WrongSilently,
        Outcome::Broken,
    ];
    print!("{:<28}", "damage");
    outcomes
        .iter()
        .for_each(|outcome| print!(" | {outcome:>21}"));
    println!();
    let mut totals = BTreeMap::new();
    for (class, counts) in &table {
        print!("{:<28}", format!("{class:?}"));
        for outcome in outcomes {
            let count = counts.get(&outcome).copied().unwrap_or(0);
            *totals.entry(outcome).or_insert(0) += count;
            print!(" | {count:>21}");
        }
        println!();
    }
    print!("{:<28}", "all");
    outcomes
        .iter()
        .for_each(|outcome| print!(" | {:>21}", totals.get(outcome).copied().unwrap_or(0)));
    println!();
    println!("{trials} trials in {:.0?}", started.elapsed());

    let failures: Vec<String> = results
        .iter()
        .filter(|(_, damage, outcome, _)| {
            !matches!(outcome, Outcome::Correct | Outcome::Refused)
                || (damage.must_be_exact && *outcome != Outcome::Correct)
        })
        .map(|(trial, damage, outcome, stderr)| {
            let tail: Vec<&str> = stderr.lines().rev().take(4).collect();
            format!(
                "trial {trial} ({:?}: {}): {outcome}; {}",
                damage.class,
                damage.what,
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} trials neither ended exact nor were refused naming the damaged file, or were refused where the issue requires the exact result (seed {seed}):\n{}",
        failures.len(),
        failures.join("\n")
    );
    let correct = totals.get(&Outcome::Correct).copied().unwrap_or(0);
    let required = (247 * trials).div_ceil(320);
    assert!(
        correct >= required,
        "{correct} of {trials} trials ended exact; at least {required} must (247 of 320)"
    );
}

#[test]
fn accept_data_loss_goes_on_says_so_in_the_summary_and_exits_3() {
    let base = Base::make("wordcount", 21, "22");
    let copy = base.copy();
    // The segment that holds batches 21 and 22 (the log rolled at checkpoint 20): a bit
    // of its second frame (the cut of batch 21) flipped, with good frames after it.
    let damaged = copy.path().join("checkpoint").join(segment(21));
    let mut bytes = std::fs::read(&damaged).unwrap();
    let first_frame = sluice::checkpoint::frame::read(&bytes).0[0].len();
    bytes[8 + first_frame + 8] ^= 0x01;
    std::fs::write(&damaged, bytes).unwrap();
    let manifest = copy.path().join("job.toml");

    let refused = sluice_run(&manifest, &[]);
    let error = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{error}");
    assert!(
        error.contains("would lose batches 21 to ")
            && error.contains(&damaged.display().to_string())
            && error.contains("--accept-data-loss"),
        "{error}"
    );

    let accepted = sluice_run(&manifest, &["--accept-data-loss"]);
    let log = String::from_utf8_lossy(&accepted.stderr);
    assert_eq!(accepted.status.code(), Some(3), "{log}");
    let summary = log
        .lines()
        .rev()
        .find(|line| line.contains("finished"))
        .unwrap();
    assert!(summary.contains("DATA WAS LOST"), "{summary}");
    assert!(
        log.contains("data lost (--accept-data-loss): batches 21 to "),
        "{log}"
    );

    // The loss was reported once: the next start has nothing to accept.
    let again = sluice_run(&manifest, &["--batches", "1"]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn a_checkpoint_directory_of_the_release_before_is_refused_saying_what_to_do() {
    let base = Base::make("wordcount", 31, "22");
    let copy = base.copy();
    let dir = copy.path().join("checkpoint");
    // What 0.1.0 wrote: no instance file, segments starting with a record, not a header.
    std::fs::remove_file(dir.join("instance")).unwrap();
    let mut legacy = Vec::new();
    sluice::checkpoint::frame::write(&mut legacy, &[1, 22, 0, 1, 0]).unwrap();
    std::fs::write(dir.join(segment(21)), legacy).unwrap();
    let output = sluice_run(&copy.path().join("job.toml"), &[]);
    let error = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{error}");
    assert!(
        error.contains("no format header")
            && error.contains("Sluice 0.1.0")
            && error.contains("move the checkpoint directory away"),
        "{error}"
    );
}

#[test]
fn the_newest_checkpoint_damaged_and_its_predecessor_intact_ends_exact() {
    let base = Base::make("wordcount", 41, "22");
    let copy = base.copy();
    let newest = copy.path().join("checkpoint").join(checkpoint_file(20));
    let mut bytes = std::fs::read(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&newest, bytes).unwrap();
    let output = sluice_run(&copy.path().join("job.toml"), &[]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(
        log.contains("fell back to the previous checkpoint"),
        "{log}"
    );
    assert_eq!(final_counts(copy.path()).0, counted(&base.input));
}
