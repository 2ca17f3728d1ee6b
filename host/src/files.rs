//! Reading files whose size nothing else bounds (manifests, components), so that a path
//! to a device, a pipe or a huge file is refused instead of read forever.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The bytes of the regular file at `path`, if it holds at most `max_bytes`. The size is
/// checked before reading, and again while reading (the file may grow in between).
pub fn read_capped(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        bail!("it is not a regular file (a device, pipe or directory could be read forever)");
    }
    let too_large = || {
        format!(
            "it is larger than {}, the most Sluice reads",
            show_size(max_bytes)
        )
    };
    if metadata.len() > max_bytes {
        bail!(too_large());
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .context("reading it failed")?;
    if bytes.len() as u64 > max_bytes {
        bail!(too_large());
    }
    Ok(bytes)
}

fn show_size(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_file_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(read_capped(&path, 5).unwrap(), b"12345");
        let error = read_capped(&path, 4).unwrap_err().to_string();
        assert!(error.contains("larger than 4 bytes"), "{error}");
    }

    #[test]
    fn refuses_devices_and_directories_without_reading_them() {
        for path in ["/dev/zero", "/tmp"] {
            let error = read_capped(Path::new(path), 1 << 20)
                .unwrap_err()
                .to_string();
            assert!(error.contains("not a regular file"), "{path}: {error}");
        }
    }

    #[test]
    fn a_missing_file_says_so() {
        let error = read_capped(Path::new("/nonexistent/sluice"), 10).unwrap_err();
        assert!(format!("{error:#}").contains("No such file"), "{error:#}");
    }
}
