//! The content-addressed store in a `.kiln/` directory.
//!
//! Objects are immutable byte strings named by their blake3 hash
//! ([`ObjectId`]). The store knows nothing of what they mean (components,
//! manifests, traces); the only structure it reads is that of JSON objects,
//! so that `gc` can follow the ids they mention.
//!
//! ```text
//! .kiln/
//!   objects/ab/cdef...   one read-only file per object, fanned out on the first byte
//!   refs/harness/best    a named ref: one file holding a hex id; names may contain `/`
//!   tmp/                 temp files, on the same filesystem so a rename is atomic
//!   cache/<ns>/<key>     derived data (compiled code), keyed by strings, not verified here
//! ```
//!
//! Design choices, after gitoxide's loose object store:
//!
//! - **Writes are atomic.** Bytes go to a temp file in `tmp/`, hashed as they
//!   stream through, then the file is made read-only and renamed to its
//!   final name without replacing anything. A file already there has the
//!   same content by construction, so "already exists" is success; concurrent
//!   writers of the same object race harmlessly. Readers never see a partial
//!   object. Objects are not fsynced: after a power loss an object can be
//!   short, which the next read detects and the next `put` of the same bytes
//!   repairs (a size mismatch makes `put` replace the file).
//! - **Reads verify.** [`Store::get`] rehashes every object and names both
//!   hashes when they differ; [`Store::verify`] does it for the whole store.
//! - **Refs are files** replaced by rename, so each update is atomic and the
//!   last writer wins.
//! - **`gc` keeps what refs reach** through ids mentioned in JSON objects. To
//!   leave room for a writer that has put objects but not yet set the ref
//!   that reaches them, it also keeps objects modified within a grace period
//!   (an hour by default); re-putting an object or pointing a ref at it
//!   refreshes its time. Without a lock the one remaining window is a ref set,
//!   during a `gc`, to an old object whose own children are old and
//!   unreachable; run `gc` when nothing else writes to be certain.
//! - **Errors are one enum per operation** (see [`error`]), each variant
//!   naming the path, id or ref it is about.

mod cache;
pub mod error;
mod id;
mod maintenance;
mod refs;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tempfile::NamedTempFile;

pub use error::{
    CacheError, GcError, GetError, ListError, OpenError, PutError, RefError, ResolveError,
    StoreError, VerifyError,
};
pub use id::{IdParseError, ObjectId};
pub use maintenance::{
    Corruption, GcOptions, GcReport, Tally, Unreadable, VerifyProgress, VerifyReport,
};

/// The fewest hex digits [`Store::resolve`] accepts.
pub const MIN_PREFIX_LEN: usize = 4;

/// Size of the buffer used when streaming objects in.
const CHUNK: usize = 64 * 1024;

/// A content-addressed store rooted at one directory. Cheap to clone; every
/// method takes `&self` and is safe to call from many threads and processes.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    objects: PathBuf,
    refs: PathBuf,
    tmp: PathBuf,
    cache: PathBuf,
}

impl Store {
    /// Open the store at `root`, creating `root` and its layout if missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, OpenError> {
        let root = root.into();
        let store = Store {
            objects: root.join("objects"),
            refs: root.join("refs"),
            tmp: root.join("tmp"),
            cache: root.join("cache"),
            root,
        };
        for dir in [&store.objects, &store.refs, &store.tmp, &store.cache] {
            fs::create_dir_all(dir).map_err(|source| OpenError {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the object `id` lives (or would live). The file may be missing or
    /// damaged; use [`Store::get`] to read it verified.
    pub fn object_path(&self, id: &ObjectId) -> PathBuf {
        let hex = id.to_hex();
        self.objects.join(&hex[..2]).join(&hex[2..])
    }

    /// Add `bytes` and return their id. Adding bytes that are already stored
    /// writes nothing.
    pub fn put(&self, bytes: &[u8]) -> Result<ObjectId, PutError> {
        let id = ObjectId::of(bytes);
        if self.already_stored(&id, bytes.len() as u64) {
            return Ok(id);
        }
        let mut tmp = self.temp_file().map_err(|e| self.temp_error(e))?;
        tmp.write_all(bytes).map_err(|source| PutError::Write {
            path: tmp.path().to_path_buf(),
            source,
        })?;
        self.persist_object(tmp, id, bytes.len() as u64)?;
        Ok(id)
    }

    /// Add everything `reader` yields, hashing while it streams to disk, and
    /// return its id. Memory use is constant in the object's size.
    pub fn put_reader(&self, mut reader: impl Read) -> Result<ObjectId, PutError> {
        let mut tmp = self.temp_file().map_err(|e| self.temp_error(e))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; CHUNK];
        let mut len = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(PutError::Read { source }),
            };
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n]).map_err(|source| PutError::Write {
                path: tmp.path().to_path_buf(),
                source,
            })?;
            len += n as u64;
        }
        let id = ObjectId::from_hash(hasher.finalize());
        if self.already_stored(&id, len) {
            return Ok(id); // dropping `tmp` deletes it
        }
        self.persist_object(tmp, id, len)?;
        Ok(id)
    }

    /// Read object `id`, checking that its bytes still hash to `id`.
    pub fn get(&self, id: &ObjectId) -> Result<Vec<u8>, GetError> {
        let path = self.object_path(id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(GetError::NotFound { id: *id, path })
            }
            Err(source) => {
                return Err(GetError::Read {
                    id: *id,
                    path,
                    source,
                })
            }
        };
        let actual = ObjectId::of(&bytes);
        if actual != *id {
            return Err(GetError::Corrupt {
                id: *id,
                actual,
                path,
            });
        }
        Ok(bytes)
    }

    /// Whether the store holds object `id` (without checking its bytes).
    pub fn has(&self, id: &ObjectId) -> bool {
        self.object_path(id).is_file()
    }

    /// The size in bytes of object `id` (without checking its bytes).
    pub fn size(&self, id: &ObjectId) -> Result<u64, GetError> {
        let path = self.object_path(id);
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(meta.len()),
            Ok(_) => Err(GetError::NotFound { id: *id, path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(GetError::NotFound { id: *id, path })
            }
            Err(source) => Err(GetError::Read {
                id: *id,
                path,
                source,
            }),
        }
    }

    /// The one stored object whose id starts with `prefix` (at least
    /// [`MIN_PREFIX_LEN`] hex digits, either case).
    pub fn resolve(&self, prefix: &str) -> Result<ObjectId, ResolveError> {
        let invalid = |reason: String| ResolveError::Invalid {
            prefix: prefix.to_string(),
            reason,
        };
        if let Some((index, c)) = prefix.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(invalid(format!("`{c}` at byte {index} is not a hex digit")));
        }
        if prefix.len() > ObjectId::HEX_LEN {
            return Err(invalid(format!(
                "it has {} digits, more than the {} of a full id",
                prefix.len(),
                ObjectId::HEX_LEN
            )));
        }
        if prefix.len() < MIN_PREFIX_LEN {
            return Err(ResolveError::TooShort {
                prefix: prefix.to_string(),
                min: MIN_PREFIX_LEN,
            });
        }
        let lower = prefix.to_ascii_lowercase();
        let (fan, rest) = lower.split_at(2);
        let dir = self.objects.join(fan);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ResolveError::Unknown {
                    prefix: prefix.to_string(),
                })
            }
            Err(source) => return Err(ResolveError::List { path: dir, source }),
        };
        let mut candidates = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ResolveError::List {
                path: dir.clone(),
                source,
            })?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(rest) {
                if let Some(id) = id_from_parts(fan, name) {
                    candidates.push(id);
                }
            }
        }
        candidates.sort();
        match candidates.len() {
            0 => Err(ResolveError::Unknown {
                prefix: prefix.to_string(),
            }),
            1 => Ok(candidates[0]),
            _ => Err(ResolveError::Ambiguous {
                prefix: prefix.to_string(),
                candidates,
            }),
        }
    }

    /// Every object id in the store, in byte order. Files in `objects/` whose
    /// names are not ids are skipped. Objects added or removed while the
    /// iterator runs may or may not appear.
    pub fn list(&self) -> Objects {
        Objects {
            objects: self.objects.clone(),
            fans: None,
            current: VecDeque::new(),
        }
    }

    /// A new temp file in `tmp/`, on the store's filesystem.
    fn temp_file(&self) -> io::Result<NamedTempFile> {
        NamedTempFile::new_in(&self.tmp)
    }

    fn temp_error(&self, source: io::Error) -> PutError {
        PutError::TempFile {
            dir: self.tmp.clone(),
            source,
        }
    }

    /// True if `id` is already stored with the expected size. Refreshes its
    /// modification time so a concurrent `gc` grants it a new grace period.
    fn already_stored(&self, id: &ObjectId, len: u64) -> bool {
        let path = self.object_path(id);
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() && meta.len() == len => {
                touch(&path);
                true
            }
            _ => false,
        }
    }

    /// Make `tmp` read-only and move it to the final name of `id`.
    fn persist_object(&self, tmp: NamedTempFile, id: ObjectId, len: u64) -> Result<(), PutError> {
        let tmp_path = tmp.path().to_path_buf();
        make_read_only(tmp.as_file()).map_err(|source| PutError::Write {
            path: tmp_path.clone(),
            source,
        })?;
        let path = self.object_path(&id);
        let dir = path.parent().expect("object paths have a fan-out parent");
        fs::create_dir_all(dir).map_err(|source| PutError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        match tmp.persist_noclobber(&path) {
            Ok(_) => Ok(()),
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                // Same name, same content, unless the file there is damaged
                // (short after a crash): then replace it atomically.
                match fs::metadata(&path) {
                    Ok(meta) if meta.len() != len => {
                        e.file
                            .persist(&path)
                            .map(|_| ())
                            .map_err(|e| PutError::Persist {
                                id,
                                path,
                                source: e.error,
                            })
                    }
                    _ => Ok(()),
                }
            }
            Err(e) => Err(PutError::Persist {
                id,
                path,
                source: e.error,
            }),
        }
    }
}

/// Iterator over the ids in a store; see [`Store::list`].
#[derive(Debug)]
pub struct Objects {
    objects: PathBuf,
    /// Fan-out directory names still to read, sorted; `None` before the first call.
    fans: Option<VecDeque<String>>,
    current: VecDeque<ObjectId>,
}

impl Objects {
    fn read_fans(&self) -> Result<VecDeque<String>, ListError> {
        let err = |source| ListError {
            path: self.objects.clone(),
            source,
        };
        let mut fans = Vec::new();
        for entry in fs::read_dir(&self.objects).map_err(err)? {
            let name = entry.map_err(err)?.file_name();
            if let Some(name) = name.to_str() {
                if name.len() == 2
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                {
                    fans.push(name.to_string());
                }
            }
        }
        fans.sort();
        Ok(fans.into())
    }

    fn read_fan(&self, fan: &str) -> Result<VecDeque<ObjectId>, ListError> {
        let dir = self.objects.join(fan);
        let mut ids = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(VecDeque::new()),
            Err(source) => return Err(ListError { path: dir, source }),
        };
        for entry in entries {
            let entry = entry.map_err(|source| ListError {
                path: dir.clone(),
                source,
            })?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|name| id_from_parts(fan, name))
            {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids.into())
    }
}

impl Iterator for Objects {
    type Item = Result<ObjectId, ListError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.fans.is_none() {
            match self.read_fans() {
                Ok(fans) => self.fans = Some(fans),
                Err(e) => {
                    self.fans = Some(VecDeque::new());
                    return Some(Err(e));
                }
            }
        }
        loop {
            if let Some(id) = self.current.pop_front() {
                return Some(Ok(id));
            }
            let fan = self.fans.as_mut()?.pop_front()?;
            match self.read_fan(&fan) {
                Ok(ids) => self.current = ids,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The id named by fan-out directory `fan` and file `name`, if they form one
/// in canonical (lowercase) form.
fn id_from_parts(fan: &str, name: &str) -> Option<ObjectId> {
    if name.len() != ObjectId::HEX_LEN - 2 || name.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    format!("{fan}{name}").parse().ok()
}

/// Make a finished object file readable by all and writable by none.
fn make_read_only(file: &File) -> io::Result<()> {
    #[cfg(unix)]
    let perms = {
        use std::os::unix::fs::PermissionsExt;
        fs::Permissions::from_mode(0o444)
    };
    #[cfg(not(unix))]
    let perms = {
        let mut perms = file.metadata()?.permissions();
        perms.set_readonly(true);
        perms
    };
    file.set_permissions(perms)
}

/// Set the modification time of `path` to now. Best effort: a failure only
/// shortens the file's grace period against `gc`.
fn touch(path: &Path) {
    if let Ok(file) = File::open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}
