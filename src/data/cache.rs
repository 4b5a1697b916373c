//! The decoded-data cache shared by the CIFAR-10 and image-folder readers:
//! where it lives, how entries are named, and atomic writes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `$SHADERGRAD_CACHE`, else `~/.cache/shadergrad`.
pub(crate) fn default_dir() -> Option<PathBuf> {
    std::env::var_os("SHADERGRAD_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/shadergrad")))
}

/// `dir/<prefix>-<hash of key>.bin`; FNV-1a, so names are stable across
/// runs and platforms.
pub(crate) fn entry(dir: &Path, prefix: &str, key: &str) -> PathBuf {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    dir.join(format!("{prefix}-{hash:016x}.bin"))
}

/// Write `path` through a temporary file and a rename, so a reader never
/// sees half an entry.
pub(crate) fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::io::BufWriter::new(fs::File::create(&tmp)?);
        write(&mut f)?;
        f.flush()?;
    }
    fs::rename(&tmp, path)
}
