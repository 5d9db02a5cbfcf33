//! Helpers for tests of a full disk: a small tmpfs mounted on a directory, and a file
//! that fills it. Mounting needs root (CI runs as root); `mount` answers `None` where it
//! cannot, and the test says it skipped.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A tmpfs mounted on a directory; unmounted when dropped.
pub struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, such as `24m`) on the directory `at`.
    pub fn mount(at: &Path, size: &str) -> Option<Self> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self {
            at: at.to_path_buf(),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.at
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.at)
            .status();
    }
}

/// Writes the file `path` until its file system is full.
pub fn fill(path: &Path) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    let block = vec![7u8; 64 << 10];
    while f.write_all(&block).is_ok() {}
    let small = [7u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
    Ok(())
}
