//! One error type per operation, as redb does, plus [`StoreError`] for callers
//! that combine several. Every variant carries the path, id or name it is
//! about; the underlying I/O error is the `source`, not part of the message,
//! so a `Caused by:` chain prints it once. `hint()` gives a one-line next step
//! where there is one.

use std::io;
use std::path::PathBuf;

use super::ObjectId;

/// Opening (and creating) a store failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot create store directory {path}")]
pub struct OpenError {
    /// The directory that could not be created.
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Adding an object failed. Nothing was added; a temp file may remain in
/// `tmp/` until the next `gc`.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// The caller's reader failed.
    #[error("cannot read the bytes to store")]
    Read {
        #[source]
        source: io::Error,
    },
    /// A temp file could not be created.
    #[error("cannot create a temp file in {dir}")]
    TempFile {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing the temp file (or setting its permissions) failed.
    #[error("cannot write temp file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A fan-out directory could not be created.
    #[error("cannot create object directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Moving the finished temp file to its final name failed.
    #[error("cannot move object {id} into place at {path}")]
    Persist {
        id: ObjectId,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl PutError {
    /// A one-line next step, if there is one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            PutError::Read { .. } => None,
            _ => Some("check that the store directory is writable and the disk is not full"),
        }
    }
}

/// Reading an object failed.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// No object has this id.
    #[error("object {id} is not in the store (looked for {path})")]
    NotFound { id: ObjectId, path: PathBuf },
    /// The object file exists but could not be read.
    #[error("cannot read object {id} at {path}")]
    Read {
        id: ObjectId,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The bytes on disk do not hash to their name.
    #[error("object {id} at {path} is corrupt: its bytes hash to {actual}")]
    Corrupt {
        id: ObjectId,
        actual: ObjectId,
        path: PathBuf,
    },
}

impl GetError {
    /// A one-line next step, if there is one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            GetError::NotFound { .. } => {
                Some("the id may be mistyped, or `gc` removed the object because no ref reached it")
            }
            GetError::Read { .. } => None,
            GetError::Corrupt { .. } => Some(
                "verify the store to list every damaged object; adding the original bytes again repairs it",
            ),
        }
    }
}

/// Listing the objects failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot list objects in {path}")]
pub struct ListError {
    /// The directory that could not be read.
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Turning a hex prefix into an object id failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Fewer than [`MIN_PREFIX_LEN`](super::MIN_PREFIX_LEN) hex digits.
    #[error("prefix `{prefix}` is too short: give at least {min} hex digits")]
    TooShort { prefix: String, min: usize },
    /// Not hex, or longer than a full id.
    #[error("`{prefix}` is not an object id prefix: {reason}")]
    Invalid { prefix: String, reason: String },
    /// No object id starts with the prefix.
    #[error("no object id starts with `{prefix}`")]
    Unknown { prefix: String },
    /// Several object ids start with the prefix.
    #[error("prefix `{prefix}` is ambiguous: it matches {}", list_ids(candidates))]
    Ambiguous {
        prefix: String,
        /// Every matching id, sorted.
        candidates: Vec<ObjectId>,
    },
    /// The fan-out directory could not be read.
    #[error("cannot list objects in {path}")]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ResolveError {
    /// A one-line next step, if there is one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            ResolveError::TooShort { .. } | ResolveError::Ambiguous { .. } => {
                Some("give more hex digits of the id")
            }
            ResolveError::Unknown { .. } => {
                Some("list the objects or refs to find the id you meant")
            }
            _ => None,
        }
    }
}

fn list_ids(ids: &[ObjectId]) -> String {
    const SHOWN: usize = 10;
    let mut text = ids
        .iter()
        .take(SHOWN)
        .map(ObjectId::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > SHOWN {
        text.push_str(&format!(" and {} more", ids.len() - SHOWN));
    }
    text
}

/// A ref operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RefError {
    /// The name breaks the naming rules.
    #[error("invalid ref name `{name}`: {reason}")]
    InvalidName { name: String, reason: String },
    /// `set_ref` was asked to point at an object the store does not hold.
    #[error("cannot point ref `{name}` at {id}: no such object")]
    MissingObject { name: String, id: ObjectId },
    /// The name collides with an existing ref or ref directory (`a` vs `a/b`).
    #[error("ref `{name}` conflicts with {path}: {reason}")]
    Conflict {
        name: String,
        path: PathBuf,
        reason: &'static str,
    },
    /// The ref file could not be read.
    #[error("cannot read ref `{name}` at {path}")]
    Read {
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The ref file could not be written or removed.
    #[error("cannot write ref `{name}` at {path}")]
    Write {
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The ref file does not hold an object id.
    #[error("ref `{name}` at {path} is corrupt: it holds `{content}`, not an object id")]
    Corrupt {
        name: String,
        path: PathBuf,
        content: String,
    },
}

impl RefError {
    /// A one-line next step, if there is one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            RefError::InvalidName { .. } => Some(
                "ref names use letters, digits, `.`, `_` and `-`, in non-empty segments separated by `/`",
            ),
            RefError::MissingObject { .. } => Some("add the object first, then set the ref"),
            RefError::Conflict { .. } => {
                Some("a ref cannot be both a name and a folder of names (`a` and `a/b`); pick another name")
            }
            RefError::Corrupt { .. } => Some("set the ref again, or delete it"),
            _ => None,
        }
    }
}

/// A cache operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A namespace or key breaks the naming rules.
    #[error("invalid cache {what} `{name}`: {reason}")]
    InvalidName {
        /// `"namespace"` or `"key"`.
        what: &'static str,
        name: String,
        reason: String,
    },
    /// An entry could not be read.
    #[error("cannot read cache entry {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An entry could not be written or removed.
    #[error("cannot write cache entry {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// `verify` could not run. Damaged objects are not errors: they are listed in
/// the [`VerifyReport`](super::VerifyReport).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    List(#[from] ListError),
}

/// `gc` stopped. It stops before deleting anything it could not prove
/// unreachable, so a failed `gc` never loses a reachable object.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    List(#[from] ListError),
    #[error(transparent)]
    Ref(#[from] RefError),
    /// A reachable object is damaged, so what it names is unknown. Nothing
    /// was deleted.
    #[error("gc stopped before deleting anything: reachable object {id} at {path} is corrupt (its bytes hash to {actual})")]
    Corrupt {
        id: ObjectId,
        actual: ObjectId,
        path: PathBuf,
    },
    /// A reachable object could not be read. Nothing was deleted.
    #[error("gc stopped before deleting anything: cannot read reachable object {id} at {path}")]
    Read {
        id: ObjectId,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An unreachable object or old temp file could not be deleted.
    #[error("cannot delete {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl GcError {
    /// A one-line next step, if there is one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            GcError::Ref(e) => e.hint(),
            GcError::Corrupt { .. } => {
                Some("restore the object (add its original bytes again) or delete the refs that reach it, then rerun gc")
            }
            _ => None,
        }
    }
}

/// Any store error, for callers that combine operations.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Put(#[from] PutError),
    #[error(transparent)]
    Get(#[from] GetError),
    #[error(transparent)]
    List(#[from] ListError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Ref(#[from] RefError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Gc(#[from] GcError),
    #[error(transparent)]
    ParseId(#[from] super::IdParseError),
}

impl StoreError {
    /// A one-line next step, if there is one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            StoreError::Put(e) => e.hint(),
            StoreError::Get(e) => e.hint(),
            StoreError::Resolve(e) => e.hint(),
            StoreError::Ref(e) => e.hint(),
            StoreError::Gc(e) => e.hint(),
            _ => None,
        }
    }
}
