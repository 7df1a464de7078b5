//! A handle of our own on a SQLite database's WAL file, to make commits durable off the
//! writer's path: the store commits with `synchronous=NORMAL` (COMMIT writes the WAL without
//! fsync) and fsyncs the WAL through this handle before it answers anyone.
//!
//! fsync covers every write to the file made before it, whatever the descriptor. Database pages
//! are synced by every checkpoint before their WAL frames count as copied, so the WAL is what
//! holds anything not yet durable. SQLite locks the database and `-shm` files, never the WAL:
//! a handle of our own on the WAL is safe to hold and to close (one on the database file is
//! not: closing it would drop this process's SQLite locks).

use std::fs::File;
use std::path::{Path, PathBuf};

/// The WAL file of one database, held open.
#[derive(Debug)]
pub struct WalFile {
    file: File,
    path: PathBuf,
}

impl WalFile {
    /// Opens (creating it if needed) the WAL of the database at `db_path` and fsyncs it: what a
    /// previous process committed may still be only in the OS's cache, and must be durable
    /// before anything of it is answered or sent.
    pub fn open(db_path: &Path) -> std::io::Result<Self> {
        let path = wal_path(db_path);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let wal = Self { file, path };
        wal.sync()?;
        Ok(wal)
    }

    /// fsyncs the WAL, then checks the handle still names the file SQLite writes: if another
    /// process deleted and recreated it (closing its last connection does that when our locks
    /// are gone), syncing the old file proves nothing.
    pub fn sync(&self) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt as _;
        self.file.sync_data()?;
        let held = self.file.metadata()?;
        let named = std::fs::metadata(&self.path)?;
        if (held.dev(), held.ino()) != (named.dev(), named.ino()) {
            return Err(std::io::Error::other(format!(
                "{} was replaced while this process ran",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// The WAL's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The WAL file of the database at `db_path`.
pub fn wal_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_wal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let wal = WalFile::open(&db).unwrap();
        assert_eq!(wal.path(), dir.path().join("x.db-wal"));
        wal.sync().unwrap();
        std::fs::remove_file(wal.path()).unwrap();
        std::fs::write(dir.path().join("x.db-wal"), b"").unwrap();
        let error = wal.sync().unwrap_err().to_string();
        assert!(error.contains("was replaced"), "{error}");
    }
}
