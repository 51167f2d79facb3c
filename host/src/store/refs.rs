//! Named refs: `refs/<name>` files holding one hex id, replaced by rename.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{touch, ObjectId, RefError, Store};

/// Longest ref name accepted, in bytes.
pub const MAX_REF_NAME_LEN: usize = 200;

/// How often `set_ref` retries when a concurrent `delete_ref` removes the
/// directory it just created.
const SET_REF_ATTEMPTS: usize = 64;

impl Store {
    /// Check `name` against the ref naming rules: 1 to 200 bytes of
    /// `[A-Za-z0-9._-]` in non-empty `/`-separated segments, none of them `.`
    /// or `..`.
    pub fn check_ref_name(name: &str) -> Result<(), RefError> {
        let invalid = |reason: String| RefError::InvalidName {
            name: name.to_string(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("it is empty".into()));
        }
        if name.len() > MAX_REF_NAME_LEN {
            return Err(invalid(format!(
                "it is {} bytes long; the limit is {MAX_REF_NAME_LEN}",
                name.len()
            )));
        }
        if let Some(c) = name
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
        {
            return Err(invalid(format!("it contains `{}`", c.escape_debug())));
        }
        for segment in name.split('/') {
            match segment {
                "" => {
                    return Err(invalid(
                        "it has an empty segment (leading, trailing or doubled `/`)".into(),
                    ))
                }
                "." | ".." => return Err(invalid(format!("it has a `{segment}` segment"))),
                _ => {}
            }
        }
        Ok(())
    }

    fn ref_path(&self, name: &str) -> PathBuf {
        name.split('/')
            .fold(self.refs.clone(), |path, segment| path.join(segment))
    }

    /// Point ref `name` at object `id`, which must be in the store. The update
    /// is atomic; when several writers set the same ref, the last one wins.
    pub fn set_ref(&self, name: &str, id: &ObjectId) -> Result<(), RefError> {
        Self::check_ref_name(name)?;
        if !self.has(id) {
            return Err(RefError::MissingObject {
                name: name.to_string(),
                id: *id,
            });
        }
        let path = self.ref_path(name);
        self.check_ref_conflicts(name, &path)?;
        let write_err = |path: &Path, source| RefError::Write {
            name: name.to_string(),
            path: path.to_path_buf(),
            source,
        };

        let mut tmp =
            tempfile::NamedTempFile::new_in(&self.tmp).map_err(|e| write_err(&self.tmp, e))?;
        writeln!(tmp, "{id}").map_err(|e| write_err(tmp.path(), e))?;
        let parent = path.parent().expect("ref paths are inside refs/");
        // A concurrent `delete_ref` may prune `parent` (or one of its
        // ancestors) while it is being created (`create_dir_all` then sees
        // it exist and vanish: AlreadyExists) or before the rename into it
        // (NotFound): start over.
        let mut attempt = 1;
        loop {
            if let Err(e) = fs::create_dir_all(parent) {
                let raced = matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::AlreadyExists
                );
                if raced && attempt < SET_REF_ATTEMPTS {
                    attempt += 1;
                    continue;
                }
                return Err(write_err(parent, e));
            }
            match tmp.persist(&path) {
                Ok(_) => break,
                Err(e)
                    if e.error.kind() == io::ErrorKind::NotFound && attempt < SET_REF_ATTEMPTS =>
                {
                    tmp = e.file;
                    attempt += 1;
                }
                Err(e) => return Err(write_err(&path, e.error)),
            }
        }
        // Give the target a fresh grace period against a concurrent gc.
        touch(&self.object_path(id));
        Ok(())
    }

    /// Refuse `name` if it would be both a ref and a folder of refs.
    fn check_ref_conflicts(&self, name: &str, path: &Path) -> Result<(), RefError> {
        let conflict = |path: PathBuf, reason| RefError::Conflict {
            name: name.to_string(),
            path,
            reason,
        };
        if path.is_dir() {
            return Err(conflict(
                path.to_path_buf(),
                "that name is a folder of other refs",
            ));
        }
        let mut ancestor = path.parent();
        while let Some(dir) = ancestor {
            if dir == self.refs {
                break;
            }
            if dir.is_file() {
                return Err(conflict(
                    dir.to_path_buf(),
                    "a ref by that name exists, so it cannot be a folder",
                ));
            }
            ancestor = dir.parent();
        }
        Ok(())
    }

    /// The object ref `name` points at, or `None` if there is no such ref.
    pub fn get_ref(&self, name: &str) -> Result<Option<ObjectId>, RefError> {
        Self::check_ref_name(name)?;
        let path = self.ref_path(name);
        self.read_ref(name, path)
    }

    fn read_ref(&self, name: &str, path: PathBuf) -> Result<Option<ObjectId>, RefError> {
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound || path.is_dir() => return Ok(None),
            Err(source) => {
                return Err(RefError::Read {
                    name: name.to_string(),
                    path,
                    source,
                })
            }
        };
        match text.trim().parse() {
            Ok(id) => Ok(Some(id)),
            Err(_) => {
                let content: String = text.trim().chars().take(80).collect();
                Err(RefError::Corrupt {
                    name: name.to_string(),
                    path,
                    content,
                })
            }
        }
    }

    /// Every ref whose name starts with `prefix` (`""` for all), sorted by
    /// name. Files under `refs/` whose paths are not valid ref names are
    /// skipped.
    pub fn refs(&self, prefix: &str) -> Result<Vec<(String, ObjectId)>, RefError> {
        let mut found = Vec::new();
        // (directory, its name relative to refs/ with a trailing `/`, or "")
        let mut pending = vec![(self.refs.clone(), String::new())];
        while let Some((dir, rel)) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(RefError::Read {
                        name: rel,
                        path: dir,
                        source,
                    })
                }
            };
            for entry in entries {
                let entry = entry.map_err(|source| RefError::Read {
                    name: rel.clone(),
                    path: dir.clone(),
                    source,
                })?;
                let Some(file_name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let name = format!("{rel}{file_name}");
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                if is_dir {
                    let sub = format!("{name}/");
                    if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                        pending.push((entry.path(), sub));
                    }
                } else if name.starts_with(prefix) && Self::check_ref_name(&name).is_ok() {
                    if let Some(id) = self.read_ref(&name, entry.path())? {
                        found.push((name, id));
                    }
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// Delete ref `name`. Returns whether it existed. Never touches objects;
    /// `gc` removes what is no longer reachable.
    pub fn delete_ref(&self, name: &str) -> Result<bool, RefError> {
        Self::check_ref_name(name)?;
        let path = self.ref_path(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound || path.is_dir() => return Ok(false),
            Err(source) => {
                return Err(RefError::Write {
                    name: name.to_string(),
                    path,
                    source,
                })
            }
        }
        // Prune folders the ref leaves empty; a non-empty one stops the walk.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.refs || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(true)
    }
}
