//! A file the proxy re-reads when it changes on disk: the JWKS that
//! client tokens are checked against and the upstream bearer token are
//! both rotated by other programs while the proxy runs. A change is seen
//! through the file's modification time, length and inode, so both an
//! in-place rewrite and an atomic rename are noticed, at the cost of one
//! `stat` per check.

use std::fs::File;
use std::io::{self, Read};
#[cfg(unix)]
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What identifies one version of the file's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Stamp {
    fn of(metadata: &std::fs::Metadata) -> Stamp {
        #[cfg(unix)]
        let inode = metadata.ino();
        #[cfg(not(unix))]
        let inode = 0;
        Stamp {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            inode,
        }
    }
}

/// A path and the version of it last read.
#[derive(Debug)]
pub struct WatchedFile {
    path: PathBuf,
    last_read: Option<Stamp>,
}

impl WatchedFile {
    pub fn new(path: impl Into<PathBuf>) -> WatchedFile {
        WatchedFile {
            path: path.into(),
            last_read: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's contents if they changed since the last call that
    /// returned them (always on the first call); `None` when unchanged.
    /// The stamp is taken from the opened file, so the contents and the
    /// stamp belong to the same inode even when the path is renamed over.
    pub fn read_if_changed(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut file = File::open(&self.path)?;
        let stamp = Stamp::of(&file.metadata()?);
        if self.last_read == Some(stamp) {
            return Ok(None);
        }
        let mut contents = Vec::with_capacity(stamp.len as usize);
        file.read_to_end(&mut contents)?;
        self.last_read = Some(stamp);
        Ok(Some(contents))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// A fresh directory under the system's temp directory, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(label: &str) -> TempDir {
            let mut suffix = [0u8; 8];
            openssl::rand::rand_bytes(&mut suffix).unwrap();
            let name = format!("kpr-{label}-{}", u64::from_le_bytes(suffix));
            let dir = std::env::temp_dir().join(name);
            std::fs::create_dir(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Writes `contents` to `path` and moves its modification time
    /// `seconds_later` past the epoch-based base, so two writes in the same
    /// clock tick still look different.
    pub(crate) fn write_at(path: &Path, contents: &[u8], seconds_later: u64) {
        std::fs::write(path, contents).unwrap();
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds_later);
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    #[test]
    fn contents_are_returned_once_per_change() {
        let dir = TempDir::new("watched");
        let path = dir.0.join("f");
        write_at(&path, b"one", 0);
        let mut watched = WatchedFile::new(&path);
        assert_eq!(
            watched.read_if_changed().unwrap().as_deref(),
            Some(&b"one"[..])
        );
        assert_eq!(watched.read_if_changed().unwrap(), None);
        write_at(&path, b"two", 1);
        assert_eq!(
            watched.read_if_changed().unwrap().as_deref(),
            Some(&b"two"[..])
        );
        assert_eq!(watched.read_if_changed().unwrap(), None);
    }

    #[test]
    fn a_rename_over_the_path_is_seen_even_with_the_same_time_and_length() {
        let dir = TempDir::new("watched-rename");
        let path = dir.0.join("f");
        write_at(&path, b"one", 0);
        let mut watched = WatchedFile::new(&path);
        watched.read_if_changed().unwrap();
        let next = dir.0.join("f.new");
        write_at(&next, b"two", 0);
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(
            watched.read_if_changed().unwrap().as_deref(),
            Some(&b"two"[..])
        );
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let dir = TempDir::new("watched-missing");
        let mut watched = WatchedFile::new(dir.0.join("absent"));
        assert_eq!(
            watched.read_if_changed().unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
