//! Whole-store maintenance: `verify` (rehash everything) and `gc` (delete
//! what no ref reaches).
//!
//! Reachability follows ids *mentioned* in objects: an object that parses as
//! JSON names every run of exactly 64 hex digits in its text (a harness
//! manifest names its components, a run index its traces). Other objects
//! (components, binary blobs) are leaves. A mention that is not an object
//! (say, a digest of a conversation) is ignored. Being generous here only
//! ever keeps more.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use super::{GcError, ListError, ObjectId, Store, VerifyError};

/// How far `verify` has got, passed to its progress callback after each object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyProgress {
    /// Objects checked so far.
    pub checked: usize,
    /// Objects to check in all (as listed when `verify` started).
    pub total: usize,
    /// Bytes hashed so far.
    pub bytes: u64,
}

/// An object whose bytes do not hash to its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// The name the object is stored under.
    pub id: ObjectId,
    /// What its bytes hash to now.
    pub actual: ObjectId,
    pub path: PathBuf,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "object {} at {} is corrupt: its bytes hash to {}",
            self.id,
            self.path.display(),
            self.actual
        )
    }
}

/// An object file that exists but could not be read.
#[derive(Debug)]
pub struct Unreadable {
    pub id: ObjectId,
    pub path: PathBuf,
    pub error: io::Error,
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot read object {} at {}: {}",
            self.id,
            self.path.display(),
            self.error
        )
    }
}

/// What `verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Objects hashed.
    pub checked: usize,
    /// Objects listed when `verify` started.
    pub total: usize,
    /// Bytes hashed.
    pub bytes: u64,
    /// Objects whose bytes do not match their names, in id order.
    pub corrupt: Vec<Corruption>,
    /// Objects that could not be read, in id order.
    pub unreadable: Vec<Unreadable>,
    /// The interrupt flag was raised before every object was checked.
    pub interrupted: bool,
}

impl VerifyReport {
    /// Every object was checked and every one was intact.
    pub fn is_clean(&self) -> bool {
        !self.interrupted && self.corrupt.is_empty() && self.unreadable.is_empty()
    }
}

/// Settings for [`Store::gc_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcOptions {
    /// Unreachable objects and temp files modified more recently than this
    /// are kept: a writer may be about to set the ref that reaches them.
    /// `Duration::ZERO` keeps nothing unreachable; use it only when nothing
    /// else writes to the store.
    pub grace: Duration,
}

impl Default for GcOptions {
    /// A grace period of one hour.
    fn default() -> Self {
        GcOptions {
            grace: Duration::from_secs(60 * 60),
        }
    }
}

/// A number of files and their total size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }
}

/// What `gc` kept and removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Objects some ref reaches.
    pub reachable: Tally,
    /// Unreachable objects kept because they are newer than the grace period.
    pub recent: Tally,
    /// Unreachable objects deleted.
    pub removed: Tally,
    /// Stale temp files deleted from `tmp/`.
    pub tmp_removed: Tally,
    /// Refs whose target is not in the store, sorted by name.
    pub dangling_refs: Vec<(String, ObjectId)>,
}

impl GcReport {
    /// Objects still in the store: reachable plus recent.
    pub fn kept(&self) -> Tally {
        Tally {
            count: self.reachable.count + self.recent.count,
            bytes: self.reachable.bytes + self.recent.bytes,
        }
    }
}

impl Store {
    /// Rehash every object. `progress` is called after each one; raising
    /// `interrupt` stops early with `interrupted` set in the report. Damaged
    /// objects are listed, not errors: the call fails only if the objects
    /// cannot be listed.
    pub fn verify(
        &self,
        mut progress: impl FnMut(&VerifyProgress),
        interrupt: &AtomicBool,
    ) -> Result<VerifyReport, VerifyError> {
        let ids = self.list().collect::<Result<Vec<_>, ListError>>()?;
        let mut report = VerifyReport {
            total: ids.len(),
            ..VerifyReport::default()
        };
        for id in ids {
            if interrupt.load(Ordering::Relaxed) {
                report.interrupted = true;
                break;
            }
            let path = self.object_path(&id);
            match hash_file(&path) {
                Ok((actual, len)) => {
                    report.bytes += len;
                    if actual != id {
                        report.corrupt.push(Corruption { id, actual, path });
                    }
                }
                // Removed since listing (a concurrent gc): nothing to check.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(error) => report.unreadable.push(Unreadable { id, path, error }),
            }
            report.checked += 1;
            progress(&VerifyProgress {
                checked: report.checked,
                total: report.total,
                bytes: report.bytes,
            });
        }
        Ok(report)
    }

    /// Delete every object no ref reaches, and temp files older than an
    /// hour, keeping unreachable objects newer than an hour. See
    /// [`Store::gc_with`].
    pub fn gc(&self) -> Result<GcReport, GcError> {
        self.gc_with(&GcOptions::default())
    }

    /// Delete every object that no ref reaches and that is older than
    /// `options.grace`, and temp files older than that. Every reachable
    /// object is read and rehashed first; if one is damaged or unreadable,
    /// `gc` stops before deleting anything, since what it names is unknown.
    pub fn gc_with(&self, options: &GcOptions) -> Result<GcReport, GcError> {
        let mut report = GcReport::default();
        let listed = self.list().collect::<Result<Vec<_>, ListError>>()?;
        let present: HashSet<ObjectId> = listed.iter().copied().collect();
        // Objects put after the listing are never deleted, but they may be
        // reachable and name listed objects, so existence checks fall back
        // to the disk.
        let exists = |id: &ObjectId| present.contains(id) || self.has(id);

        // Mark.
        let mut reachable = HashSet::new();
        let mut queue = VecDeque::new();
        for (name, id) in self.refs("")? {
            if !exists(&id) {
                report.dangling_refs.push((name, id));
            } else if reachable.insert(id) {
                queue.push_back(id);
            }
        }
        while let Some(id) = queue.pop_front() {
            let path = self.object_path(&id);
            let bytes = fs::read(&path).map_err(|source| GcError::Read {
                id,
                path: path.clone(),
                source,
            })?;
            let actual = ObjectId::of(&bytes);
            if actual != id {
                return Err(GcError::Corrupt { id, actual, path });
            }
            report.reachable.add(bytes.len() as u64);
            for mentioned in mentioned_ids(&bytes) {
                if exists(&mentioned) && reachable.insert(mentioned) {
                    queue.push_back(mentioned);
                }
            }
        }

        // Sweep.
        let now = SystemTime::now();
        for id in listed.iter().filter(|id| !reachable.contains(id)) {
            let path = self.object_path(id);
            let meta = match fs::metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(GcError::Remove { path, source }),
            };
            if is_recent(meta.modified().ok(), now, options.grace) {
                report.recent.add(meta.len());
            } else if remove_file(&path).map_err(|source| GcError::Remove {
                path: path.clone(),
                source,
            })? {
                report.removed.add(meta.len());
            }
        }
        self.clear_stale_temp_files(now, options.grace, &mut report)?;
        Ok(report)
    }

    fn clear_stale_temp_files(
        &self,
        now: SystemTime,
        grace: Duration,
        report: &mut GcReport,
    ) -> Result<(), GcError> {
        let list_err = |source| {
            GcError::List(ListError {
                path: self.tmp.clone(),
                source,
            })
        };
        for entry in fs::read_dir(&self.tmp).map_err(list_err)? {
            let entry = entry.map_err(list_err)?;
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() || is_recent(meta.modified().ok(), now, grace) {
                continue;
            }
            let path = entry.path();
            if remove_file(&path).map_err(|source| GcError::Remove {
                path: path.clone(),
                source,
            })? {
                report.tmp_removed.add(meta.len());
            }
        }
        Ok(())
    }
}

/// The blake3 id and length of the file at `path`, streamed.
fn hash_file(path: &Path) -> io::Result<(ObjectId, u64)> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::open(path)?)?;
    Ok((ObjectId::from_hash(hasher.finalize()), hasher.count()))
}

/// Whether a file modified at `modified` is inside the grace period. Unknown
/// or future times count as recent; a zero grace period makes nothing recent.
fn is_recent(modified: Option<SystemTime>, now: SystemTime, grace: Duration) -> bool {
    if grace.is_zero() {
        return false;
    }
    match modified.map(|m| now.duration_since(m)) {
        Some(Ok(age)) => age < grace,
        _ => true,
    }
}

/// Remove a file, making it writable first where read-only files cannot be
/// removed (Windows). Returns false if it was already gone.
fn remove_file(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && cfg!(windows) => {
            let mut perms = fs::metadata(path)?.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            fs::set_permissions(path, perms)?;
            fs::remove_file(path).map(|()| true).map_err(|_| e)
        }
        Err(e) => Err(e),
    }
}

/// The ids an object mentions: every run of exactly 64 hex digits, if the
/// object is UTF-8 JSON; nothing otherwise.
pub(super) fn mentioned_ids(bytes: &[u8]) -> Vec<ObjectId> {
    if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
        return Vec::new();
    }
    let mut ids = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_hexdigit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
            i += 1;
        }
        if i - start == ObjectId::HEX_LEN {
            let hex = std::str::from_utf8(&bytes[start..i]).expect("hex digits are ASCII");
            if let Ok(id) = hex.parse() {
                ids.push(id);
            }
        }
    }
    ids
}
