//! Files in and out, safely: inputs are opened only when they are regular files (a FIFO or a
//! device given as a weight or config file would block or never end) and read with a size
//! cap; outputs appear only complete ([`PendingFile`]: written to a temporary file in the
//! target folder, then linked or renamed into place), never through a symbolic link, and never
//! over an existing file unless the caller says so.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Largest config file read (JSON or YAML: `config.json`, `scheduler_config.json`, an LDM
/// yaml); real ones are a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Opens `path` for reading if it is a regular file (symbolic links to one are followed, as
/// any reader does); a folder, FIFO, socket or device is an error naming it.
pub fn open_regular(path: &Path) -> Result<std::fs::File> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a folder"
        } else {
            "not a regular file (a FIFO, socket or device)"
        };
        return Err(Error::Input {
            path: path.to_path_buf(),
            what: format!("is {kind}; a regular file is needed here"),
        });
    }
    std::fs::File::open(path).map_err(io(path))
}

/// Reads a regular file of at most `limit` bytes.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = open_regular(path)?;
    let len = file.metadata().map_err(io(path))?.len();
    if len > limit {
        return Err(Error::Input {
            path: path.to_path_buf(),
            what: format!("is {len} bytes, above the limit of {limit} bytes for this kind of file"),
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // `take` also bounds a file that grows while being read.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io(path))?;
    if bytes.len() as u64 > limit {
        return Err(Error::Input {
            path: path.to_path_buf(),
            what: format!("grew past the limit of {limit} bytes while being read"),
        });
    }
    Ok(bytes)
}

/// [`read_limited`] as UTF-8 text.
pub fn read_text_limited(path: &Path, limit: u64) -> Result<String> {
    String::from_utf8(read_limited(path, limit)?).map_err(|e| Error::Input {
        path: path.to_path_buf(),
        what: format!("is not UTF-8 text ({e})"),
    })
}

/// A config file (JSON or YAML) of at most [`MAX_CONFIG_BYTES`].
pub fn read_config_text(path: &Path) -> Result<String> {
    read_text_limited(path, MAX_CONFIG_BYTES)
}

fn out_err(path: &Path, what: impl Into<String>) -> Error {
    Error::Output {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// Checks that `path` can be written as a new output: not a symbolic link, not an existing
/// file unless `overwrite` (and never anything but a regular file). Creates nothing.
pub fn check_output_path(path: &Path, overwrite: bool) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(out_err(
            path,
            "is a symbolic link; sd-wgpu never writes through links (remove it or choose another path)",
        )),
        Ok(m) if !m.is_file() => Err(out_err(path, "exists and is not a regular file")),
        Ok(_) if !overwrite => Err(out_err(
            path,
            "already exists; pass --overwrite (OutputOptions / `overwrite = true` in the library) to replace it",
        )),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(out_err(path, format!("cannot inspect it: {e}"))),
    }
}

/// An output file being written: bytes go to a temporary file beside the target, which
/// [`PendingFile::commit`] moves into place at once. Dropped without a commit, the temporary
/// file is removed and the target is untouched.
pub struct PendingFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<std::fs::File>,
    overwrite: bool,
}

impl PendingFile {
    /// Checks `path` ([`check_output_path`]) and creates the temporary file in its folder, so
    /// that a missing or read-only folder is found now, before any work.
    pub fn create(path: &Path, overwrite: bool) -> Result<Self> {
        check_output_path(path, overwrite)?;
        let name = path
            .file_name()
            .ok_or_else(|| out_err(path, "names no file"))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let k = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}-{k}.sd-wgpu-tmp", std::process::id()));
        let tmp = dir.join(tmp_name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| {
                let why = match e.kind() {
                    std::io::ErrorKind::NotFound => "the folder does not exist".to_string(),
                    std::io::ErrorKind::PermissionDenied => {
                        "the folder is not writable".to_string()
                    }
                    _ => e.to_string(),
                };
                out_err(
                    path,
                    format!("cannot create a file in `{}`: {why}", dir.display()),
                )
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            file: Some(file),
            overwrite,
        })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes all of `bytes` to the temporary file and flushes it to disk.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let path = self.path.clone();
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| out_err(&path, "written after being closed"))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| out_err(&path, format!("writing failed: {e}")))
    }

    /// Moves the complete file into place. Without `overwrite` this is a hard link, which
    /// fails rather than replace a file that appeared meanwhile; with it, a rename (which
    /// replaces a link itself, never its target).
    pub fn commit(mut self) -> Result<()> {
        drop(self.file.take());
        let placed = if self.overwrite {
            std::fs::rename(&self.tmp, &self.path)
        } else {
            match std::fs::hard_link(&self.tmp, &self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    // A file system without hard links: check again, then rename.
                    check_output_path(&self.path, false)?;
                    std::fs::rename(&self.tmp, &self.path)
                }
                r => r,
            }
        };
        placed.map_err(|e| {
            let what = if e.kind() == std::io::ErrorKind::AlreadyExists {
                "appeared while the image was being made; not replaced (pass --overwrite)"
                    .to_string()
            } else {
                format!("could not be moved into place: {e}")
            };
            out_err(&self.path, what)
        })?;
        // After a hard link the temporary name remains; after a rename it is gone.
        let _ = std::fs::remove_file(&self.tmp);
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        drop(self.file.take());
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `path` all or nothing ([`PendingFile`]).
pub fn write_atomic(path: &Path, bytes: &[u8], overwrite: bool) -> Result<()> {
    let mut f = PendingFile::create(path, overwrite)?;
    f.write_all(bytes)?;
    f.commit()
}

/// Commits several pending files together: every one is written before any is placed, and
/// if placing one fails, the ones placed before it by this call (new files only) are removed
/// again, so a run leaves all of its outputs or none of the new ones.
pub fn commit_all(files: Vec<(PendingFile, Vec<u8>)>) -> Result<()> {
    let mut ready = Vec::with_capacity(files.len());
    for (mut f, bytes) in files {
        f.write_all(&bytes)?;
        ready.push(f);
    }
    let mut placed: Vec<(PathBuf, bool)> = Vec::new();
    for f in ready {
        let (path, overwrite) = (f.path.clone(), f.overwrite);
        if let Err(e) = f.commit() {
            for (p, replaced) in placed {
                if !replaced {
                    let _ = std::fs::remove_file(p);
                }
            }
            return Err(e);
        }
        placed.push((path, overwrite));
    }
    Ok(())
}

/// SHA-256 of a file, as lowercase hex (what the common UIs' "Model hash" abbreviates to its
/// first 10 characters).
pub fn sha256_hex(path: &Path) -> Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = open_regular(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sd-wgpu-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn pending_files_appear_whole_or_not_at_all() {
        let d = dir("pending");
        let p = d.join("a.bin");
        // Dropped without commit: nothing at the path, no temporary left behind.
        {
            let mut f = PendingFile::create(&p, false).unwrap();
            f.write_all(b"half").unwrap();
        }
        assert!(!p.exists());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        write_atomic(&p, b"one", false).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        // Existing file: refused without overwrite, and left as it was.
        let e = write_atomic(&p, b"two", false).unwrap_err().to_string();
        assert!(e.contains("already exists") && e.contains("a.bin"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        write_atomic(&p, b"two", true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        // A file that appears between create and commit is not replaced.
        let q = d.join("b.bin");
        let mut f = PendingFile::create(&q, false).unwrap();
        f.write_all(b"mine").unwrap();
        std::fs::write(&q, b"theirs").unwrap();
        let e = f.commit().unwrap_err().to_string();
        assert!(e.contains("appeared"), "{e}");
        assert_eq!(std::fs::read(&q).unwrap(), b"theirs");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[cfg(unix)]
    #[test]
    fn links_missing_folders_and_special_files_are_refused() {
        let d = dir("links");
        let target = d.join("target.txt");
        std::fs::write(&target, b"keep").unwrap();
        let link = d.join("link.png");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for overwrite in [false, true] {
            let e = write_atomic(&link, b"x", overwrite)
                .unwrap_err()
                .to_string();
            assert!(e.contains("symbolic link"), "{e}");
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        let e = PendingFile::create(&d.join("no/such/dir/x.png"), false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("does not exist") && e.contains("writing"), "{e}");
        // A folder is not a regular file to read, nor to write over.
        let e = read_limited(&d, 10).unwrap_err().to_string();
        assert!(e.contains("a folder"), "{e}");
        assert!(check_output_path(&d, true).is_err());
        let e = read_limited(&target, 2).unwrap_err().to_string();
        assert!(e.contains("above the limit of 2 bytes"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn commit_all_places_every_file_or_none_of_the_new_ones() {
        let d = dir("all");
        let (a, b) = (d.join("a.png"), d.join("b.npy"));
        let fa = PendingFile::create(&a, false).unwrap();
        let fb = PendingFile::create(&b, false).unwrap();
        std::fs::write(&b, b"appeared").unwrap();
        assert!(commit_all(vec![(fa, b"A".to_vec()), (fb, b"B".to_vec())]).is_err());
        assert!(!a.exists(), "the first file must be taken back");
        assert_eq!(std::fs::read(&b).unwrap(), b"appeared");
        let _ = std::fs::remove_dir_all(&d);
    }
}
