//! Shared plumbing for backends that keep one file per database in a directory: mapping
//! names to paths, listing, and an exclusive lock per database so that a second process
//! gets a clear error instead of a corrupt file.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::backend::BackendError;

/// `dir/<name>.<ext>`; nested names (`a/b`) become subdirectories.
pub fn database_path(dir: &Path, name: &str, ext: &str) -> PathBuf {
    dir.join(format!("{name}.{ext}"))
}

/// Every `*.<ext>` file below `dir`, as database names, sorted.
pub fn list_databases(dir: &Path, ext: &str) -> Result<Vec<String>, BackendError> {
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &format!(".{ext}"), &mut out)?;
    }
    out.sort();
    Ok(out)
}

fn walk(root: &Path, dir: &Path, suffix: &str, out: &mut Vec<String>) -> Result<(), BackendError> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(root, &path, suffix, out)?;
        } else if let Some(rel) = path.strip_prefix(root).ok().and_then(|p| p.to_str()) {
            if let Some(name) = rel.strip_suffix(suffix) {
                if crate::names::validate_name(name).is_ok() {
                    out.push(name.to_string());
                }
            }
        }
    }
    Ok(())
}

/// Database files this process holds locks on.
static HELD: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn held() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// An exclusive advisory lock on `<path>.lock`, held for as long as the value lives.
#[derive(Debug)]
pub struct DatabaseLock {
    _file: File,
    path: PathBuf,
}

impl DatabaseLock {
    pub fn acquire(db_path: &Path) -> Result<Self, BackendError> {
        let mut lock_path = db_path.as_os_str().to_owned();
        lock_path.push(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        match file.try_lock() {
            Ok(()) => {
                held().push(db_path.to_path_buf());
                Ok(DatabaseLock {
                    _file: file,
                    path: db_path.to_path_buf(),
                })
            }
            Err(TryLockError::WouldBlock) => Err(BackendError::Locked(format!(
                "{} is open in another process (lock file {})",
                db_path.display(),
                PathBuf::from(lock_path).display()
            ))),
            Err(TryLockError::Error(e)) => Err(e.into()),
        }
    }
}

impl Drop for DatabaseLock {
    fn drop(&mut self) {
        let mut h = held();
        if let Some(i) = h.iter().position(|p| p == &self.path) {
            h.swap_remove(i);
        }
    }
}

/// Remove a database file, its lock, and sidecar files named by suffix (`"-wal"`). Returns
/// whether the file existed. A database another process has open is refused with
/// [`BackendError::Locked`]; one this process holds (its engine has closed it) is removed.
pub fn remove_database_files(db_path: &Path, sidecars: &[&str]) -> Result<bool, BackendError> {
    let existed = db_path.exists();
    if !existed {
        return Ok(false);
    }
    let _lock = if held().iter().any(|p| p == db_path) {
        None
    } else {
        Some(DatabaseLock::acquire(db_path)?)
    };
    std::fs::remove_file(db_path)?;
    for s in sidecars.iter().chain(&[".lock"]) {
        let mut p = db_path.as_os_str().to_owned();
        p.push(s);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    Ok(existed)
}
