//! Space held back for recovery: a file of zeros next to the store, given up when a write
//! fails so the store can be reopened (and read) on a full disk, and taken back before
//! writes resume, which is how the store learns that space has returned.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::StoreError;

/// The reserve file of a store.
pub(crate) struct Reserve {
    path: PathBuf,
    bytes: u64,
}

impl Reserve {
    /// The reserve that belongs to the store at `db_path`, `bytes` long (0: none).
    pub(crate) fn new(db_path: &Path, bytes: u64) -> Self {
        Self {
            path: db_path.with_extension("reserve"),
            bytes,
        }
    }

    /// Makes sure the reserve is on disk, whole and synced. Fails (and leaves no partial
    /// file) while the disk has no room for it.
    pub(crate) fn ensure(&self) -> Result<(), StoreError> {
        if self.bytes == 0 {
            return Ok(());
        }
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() == self.bytes) {
            return Ok(());
        }
        let written = self.write();
        if written.is_err() {
            let _ = std::fs::remove_file(&self.path);
        }
        written.map_err(|e| StoreError::io(self.path.clone(), "write the space reserve", &e))
    }

    fn write(&self) -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.path)?;
        // Blocks allocated without writing them where the file system can; zeros written
        // where it cannot.
        if allocate(&f, self.bytes).is_err() {
            let zeros = vec![0u8; 1 << 20];
            let mut left = self.bytes;
            while left > 0 {
                let n = usize::try_from(left.min(zeros.len() as u64)).unwrap_or(zeros.len());
                f.write_all(&zeros[..n])?;
                left -= n as u64;
            }
        }
        f.sync_all()
    }

    /// Gives the reserve's space back to the file system.
    pub(crate) fn release(&self) {
        if self.bytes > 0 {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Allocates `len` bytes of `f` on disk (posix_fallocate(3)).
#[allow(unsafe_code)]
fn allocate(f: &std::fs::File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
    // SAFETY: posix_fallocate takes a file descriptor this function borrows for the call
    // and two integers; it touches no memory of ours.
    let rc = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_is_written_whole_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("solo.redb");
        let r = Reserve::new(&db, 3 << 20);
        r.ensure().unwrap();
        let file = dir.path().join("solo.reserve");
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 3 << 20);
        r.ensure().unwrap();
        r.release();
        assert!(!file.exists());
        Reserve::new(&db, 0).ensure().unwrap();
        assert!(!file.exists());
    }
}
