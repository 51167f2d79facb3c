//! One error type per operation: composing ([`ComposeError`]), probing a
//! component ([`ProbeError`]), assembling a harness ([`AssembleError`]),
//! editing one ([`EditError`]), and storing or loading one
//! ([`HarnessError`]). Authoring errors, which point into a TOML file, are
//! [`ManifestError`](super::ManifestError).

use crate::store::{GetError, ObjectId, PutError, RefError, ResolveError};

/// A processor set that breaks a composition rule. Each message names the
/// rule; `at` is the index (in the author's order) of the entry that broke it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    #[error("two processors are named `{name}`: names must be unique in a harness")]
    DuplicateName { name: String, first: usize, second: usize },
    #[error("a second processor in singleton group `{group}` (`{second}` joins `{first}`)")]
    GroupConflict { group: String, first: String, second: String, at: usize },
    #[error("tool `{tool}` is provided by both `{first}` and `{second}`")]
    ToolCollision { tool: String, first: String, second: String, at: usize },
    #[error("`{name}` (band {band}) asks to run after `{after}`, which is in the later band {after_band}: bands always run pre, normal, post")]
    AfterLaterBand { name: String, band: &'static str, after: String, after_band: &'static str, at: usize },
    #[error("the `after` dependencies form a cycle: {}", cycle_text(.cycle))]
    Cycle { cycle: Vec<String>, at: usize },
}

fn cycle_text(cycle: &[String]) -> String {
    let mut names: Vec<&str> = cycle.iter().map(String::as_str).collect();
    if let Some(first) = names.first().copied() {
        names.push(first);
    }
    names.join(" → ")
}

impl ComposeError {
    /// The index (in the author's order) of the entry that broke the rule.
    pub fn at(&self) -> usize {
        match self {
            ComposeError::DuplicateName { second, .. } => *second,
            ComposeError::GroupConflict { at, .. }
            | ComposeError::ToolCollision { at, .. }
            | ComposeError::AfterLaterBand { at, .. }
            | ComposeError::Cycle { at, .. } => *at,
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            ComposeError::DuplicateName { .. } => "remove one, or use replace to swap them".into(),
            ComposeError::GroupConflict { .. } => "remove one, or use replace".into(),
            ComposeError::ToolCollision { .. } => "keep one of the two providers, or configure one to name its tool differently".into(),
            ComposeError::AfterLaterBand { .. } => "drop one of the two, or rebuild one with a band that allows the order".into(),
            ComposeError::Cycle { .. } => "remove one processor of the cycle".into(),
        }
    }
}

/// Why a component could not be described or configured.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("component {component} is not in the store")]
    Missing { component: ObjectId },
    #[error("cannot read component {component} from the store: {reason}")]
    Store { component: ObjectId, reason: String },
    #[error("{reason}")]
    NotAProcessor { component: ObjectId, reason: String },
    #[error("processor `{processor}` refused its configuration: {reason}")]
    Rejected { processor: String, reason: String },
}

/// Why a list of processor entries does not make a harness.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    /// Entry `index` (author's order) could not be probed.
    #[error("processor {}: {source}", .index + 1)]
    Probe {
        index: usize,
        #[source]
        source: ProbeError,
    },
    #[error(transparent)]
    Compose(#[from] ComposeError),
    /// A tool name in `tools.deny` is empty.
    #[error("`tools.deny` holds an empty tool name")]
    EmptyDeny,
}

/// Why an edit was refused. The harness it was applied to is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("no processor or group named `{target}` in this harness (it has: {})", if .known.is_empty() { "no processors".to_string() } else { .known.join(", ") })]
    NoSuchProcessor { target: String, known: Vec<String> },
    #[error("both harnesses have a processor `{name}`, configured differently: a merge only unites, it never chooses")]
    MergeConflict { name: String },
    #[error("both harnesses set {what}, differently: a merge only unites, it never chooses")]
    MergeSettingConflict { what: &'static str },
    #[error("a processor's config must be a JSON object, not {found}")]
    ConfigNotObject { found: &'static str },
    /// The edit breaks a composition rule.
    #[error("{0}: {hint}", hint = .0.hint())]
    Compose(ComposeError),
    #[error(transparent)]
    Assemble(#[from] AssembleError),
}

impl EditError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            EditError::NoSuchProcessor { .. } => "name a processor (or its group) from `kiln harness show`".into(),
            EditError::MergeConflict { name } => format!("replace `{name}` in one harness first, so both agree"),
            EditError::MergeSettingConflict { .. } => "set it the same in both, or apply set_system after the merge".into(),
            EditError::ConfigNotObject { .. } => "write the config as a JSON object, e.g. {\"window\": 8}".into(),
            EditError::Compose(c) | EditError::Assemble(AssembleError::Compose(c)) => c.hint(),
            EditError::Assemble(_) => "check the component and its config with `kiln inspect`".into(),
        }
    }
}

/// Storing, loading or instantiating a harness failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Get(#[from] GetError),
    #[error(transparent)]
    Put(#[from] PutError),
    #[error(transparent)]
    Ref(#[from] RefError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("object {id} is not a harness: {reason}")]
    NotAHarness { id: ObjectId, reason: String },
    #[error("object {id} is not in canonical form (stored by another version of kiln?): it re-encodes to {actual}")]
    NotCanonical { id: ObjectId, actual: ObjectId },
    #[error("harness {id} no longer assembles")]
    Assemble {
        id: ObjectId,
        #[source]
        source: Box<AssembleError>,
    },
    #[error("cannot load component {component} of processor `{processor}`")]
    Component {
        processor: String,
        component: ObjectId,
        #[source]
        source: Box<crate::sandbox::LoadError>,
    },
    #[error("object {id} is not a lineage record: {reason}")]
    NotALineage { id: ObjectId, reason: String },
    #[error("cannot apply a recorded edit to harness {parent}")]
    Edit {
        parent: ObjectId,
        #[source]
        source: Box<EditError>,
    },
    #[error("`{name}` is not a harness name, id or id prefix: {reason}")]
    Unknown { name: String, reason: String },
}
