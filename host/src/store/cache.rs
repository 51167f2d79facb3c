//! Derived data keyed by strings (the compiled-code cache lives here).
//!
//! Entries are *not* content-addressed and are never checked here: the
//! caller must authenticate what it reads (for compiled code, by keying on
//! the component id and engine fingerprint and letting the runtime check its
//! own header). Writes are atomic (temp file + rename); the last writer wins.

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

use super::{CacheError, Store};

/// Longest namespace or key accepted, in bytes (one file name).
pub const MAX_CACHE_NAME_LEN: usize = 200;

fn check_cache_name(what: &'static str, name: &str) -> Result<(), CacheError> {
    let invalid = |reason: String| CacheError::InvalidName {
        what,
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    if name.len() > MAX_CACHE_NAME_LEN {
        return Err(invalid(format!(
            "it is {} bytes long; the limit is {MAX_CACHE_NAME_LEN}",
            name.len()
        )));
    }
    if name.starts_with('.') {
        return Err(invalid("it starts with `.`".into()));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(format!(
            "it contains `{}`; use letters, digits, `.`, `_` and `-`",
            c.escape_debug()
        )));
    }
    Ok(())
}

impl Store {
    /// The file for cache entry `key` in `namespace` (both one file name of
    /// `[A-Za-z0-9._-]`, not starting with `.`). The file may not exist; use
    /// this to hand the path to something that maps files, and
    /// [`Store::cache_put`] to write it.
    pub fn cache_path(&self, namespace: &str, key: &str) -> Result<PathBuf, CacheError> {
        check_cache_name("namespace", namespace)?;
        check_cache_name("key", key)?;
        Ok(self.cache.join(namespace).join(key))
    }

    /// Store `bytes` as entry `key` in `namespace`, atomically replacing any
    /// previous entry. Returns the entry's path.
    pub fn cache_put(
        &self,
        namespace: &str,
        key: &str,
        bytes: &[u8],
    ) -> Result<PathBuf, CacheError> {
        let path = self.cache_path(namespace, key)?;
        let dir = path.parent().expect("cache paths have a namespace folder");
        let write_err = |path: PathBuf| move |source| CacheError::Write { path, source };
        fs::create_dir_all(dir).map_err(write_err(dir.to_path_buf()))?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(&self.tmp).map_err(write_err(self.tmp.clone()))?;
        tmp.write_all(bytes)
            .map_err(write_err(tmp.path().to_path_buf()))?;
        tmp.persist(&path).map_err(|e| CacheError::Write {
            path: path.clone(),
            source: e.error,
        })?;
        Ok(path)
    }

    /// The bytes of entry `key` in `namespace`, or `None` if there is none.
    pub fn cache_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.cache_path(namespace, key)?;
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CacheError::Read { path, source }),
        }
    }

    /// Remove entry `key` in `namespace` (for example one that failed the
    /// caller's check). Returns whether it existed.
    pub fn cache_remove(&self, namespace: &str, key: &str) -> Result<bool, CacheError> {
        let path = self.cache_path(namespace, key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(CacheError::Write { path, source }),
        }
    }
}
