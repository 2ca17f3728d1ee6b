//! `sluice checkpoint inspect`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};
use bytesize::ByteSize;
use sluice::checkpoint::format::{self, InstanceId};
use sluice::checkpoint::{instance, snapshot};

pub fn inspect(dir: &Path) -> Result<ExitCode> {
    if !dir.is_dir() {
        bail!(
            "{} is not a directory: give the `[checkpoint] dir` of a job that has run",
            dir.display()
        );
    }
    // A job writes its instance file before anything else: without it and without any of
    // the files a checkpoint holds, this is some other folder (a typo, the job's output).
    let holds_a_checkpoint = ["metadata.json", "state", "wal"]
        .iter()
        .any(|name| dir.join(name).exists())
        || instance::path(dir).exists();
    if !holds_a_checkpoint {
        bail!(
            "{} is not a checkpoint directory (it has no instance file, metadata.json, state/ or wal/): give the `[checkpoint] dir` of a job that has run",
            dir.display()
        );
    }
    let metadata = std::fs::read(dir.join("metadata.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
    if let Some(metadata) = &metadata {
        println!("job: {}", metadata["job"].as_str().unwrap_or("?"));
        let last = &metadata["last_completed_batch"];
        println!(
            "last completed batch: {} (time {} ms)",
            last["number"], last["time_ms"]
        );
        println!("components in use:");
        for (label, digest) in metadata["components"].as_object().into_iter().flatten() {
            println!("  {label}  sha256 {}", digest.as_str().unwrap_or("?"));
        }
    } else {
        println!("no readable metadata.json (the job has not completed a batch yet?)");
    }
    let instance = match instance::read(&instance::path(dir)) {
        Ok(id) => {
            println!("instance: {id} (checkpoint format {})", format::FORMAT);
            id
        }
        Err(error) => {
            println!("instance: {error:#}");
            InstanceId([0; 16])
        }
    };
    let checkpoints = snapshot::list(&dir.join("state"))?;
    if checkpoints.is_empty() {
        println!("state checkpoints: none");
    }
    for (index, (number, path)) in checkpoints.iter().enumerate() {
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        match snapshot::read(path, instance) {
            Ok((snapshot, _)) => {
                println!(
                    "state checkpoint after batch {number} (time {} ms), {}{}:",
                    snapshot.time_ms,
                    ByteSize(size),
                    if index == 0 { ", newest" } else { "" }
                );
                for operator in &snapshot.operators {
                    println!(
                        "  step {} ({}): {} entries, {}",
                        operator.id,
                        operator.kind,
                        operator.entries,
                        ByteSize(operator.state.len() as u64)
                    );
                    for (label, digest) in &operator.udfs {
                        println!("    {label}  sha256 {digest}");
                    }
                }
            }
            Err(error) => println!("state checkpoint after batch {number}: {error}"),
        }
    }
    let (mut segments, mut bytes) = (0, 0);
    for entry in std::fs::read_dir(dir.join("wal"))
        .into_iter()
        .flatten()
        .flatten()
    {
        segments += 1;
        bytes += entry.metadata().map_or(0, |m| m.len());
    }
    println!(
        "write-ahead log: {segments} segment(s), {}",
        ByteSize(bytes)
    );
    Ok(ExitCode::SUCCESS)
}
