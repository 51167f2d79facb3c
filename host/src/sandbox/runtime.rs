//! One engine per process, components loaded once per blake3 id, and the
//! compiled-code cache.
//!
//! Loading a component checks it against the WIT this host speaks before
//! anything else, so a component built against another version of
//! `kiln:harness` is refused with both versions named. Compiled native code
//! is cached on disk under (component id, engine fingerprint) and signed with
//! a key private to this host: only code this host compiled itself is ever
//! deserialized, and a tampered artifact is recompiled, not loaded.

use std::collections::HashMap;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

use super::bindings::{Processor, ProcessorPre};
use super::context::Hook;
use super::instance::classify;
use super::limits::{Grants, Limits, MAX_MEMORY_BYTES};
use super::state::{State, VirtualClock};
use super::Fault;

/// The WIT package version this host speaks.
pub const WIT_VERSION: &str = "0.1.0";
/// The interface a processor must export.
pub const HOOKS_EXPORT: &str = "kiln:harness/hooks@0.1.0";

/// Milliseconds per epoch tick: the granularity of deadlines.
pub(crate) const TICK_MS: u64 = 1;

/// A component's id: the blake3 hash of its bytes, as 64 hex characters.
pub type ComponentId = Arc<str>;

/// Coarse position of a processor within a hook's pipeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Band {
    Pre,
    #[default]
    Normal,
    Post,
}

/// What a processor says about itself (`describe`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub name: String,
    pub version: String,
    pub hooks: Vec<Hook>,
    pub group: Option<String>,
    pub band: Band,
    pub after: Vec<String>,
}

/// How to build the runtime.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Use the pooling allocator with copy-on-write memory images.
    pub pooling: bool,
    /// Component instances the pool holds at once (tasks × processors).
    pub max_instances: u32,
    /// Meter fuel. Off only for benchmarks that measure its cost.
    pub fuel: bool,
    /// Enforce wall-clock deadlines with epoch checks in the compiled code.
    /// Off only for benchmarks that measure its cost: without it a call
    /// has no deadline.
    pub epochs: bool,
    /// Where compiled code is cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { pooling: true, max_instances: 1_000, fuel: true, epochs: true, cache_dir: None }
    }
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("component {id} is not a valid WebAssembly component: {reason}")]
    Invalid { id: String, reason: String },
    #[error("component {id} was built against kiln:harness@{found}, but this host speaks kiln:harness@{WIT_VERSION}")]
    WrongVersion { id: String, found: String },
    #[error("component {id} is not a kiln processor: it does not export `{HOOKS_EXPORT}` (its exports: {exports})")]
    NotAProcessor { id: String, exports: String },
    #[error("component {id} imports `{import}`, which a processor may not use (only kiln:harness@{WIT_VERSION} and WASI 0.2)")]
    UnknownImport { id: String, import: String },
    #[error("component {id} faulted in describe: {fault}")]
    Describe { id: String, fault: Fault },
    #[error("component {id}: {reason}")]
    Runtime { id: String, reason: String },
}

/// A component ready to instantiate: checked, compiled and described.
pub struct Loaded {
    pub id: ComponentId,
    pub info: Info,
    /// `info.name` again, shared by every call report of this component: a
    /// report is made per call, and cloning this (like `id`) never allocates.
    pub(crate) report_name: Arc<str>,
    /// Size of the component's bytes.
    pub size: usize,
    /// Every import and export name, for `kiln inspect`.
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// Whether the code came from the on-disk cache.
    pub from_cache: bool,
    pub(crate) pre: ProcessorPre<State>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded").field("id", &self.id).field("info", &self.info).finish()
    }
}

struct Inner {
    engine: Engine,
    linker: Linker<State>,
    loaded: Mutex<HashMap<ComponentId, Arc<Loaded>>>,
    cache: Option<CodeCache>,
    fuel: bool,
    /// Instances the pool holds at once (`None`: on-demand, no fixed limit).
    pool: Option<u32>,
    stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The process's Wasm runtime. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl Runtime {
    /// Build the engine, the linker and (if asked) the code cache.
    pub fn new(cfg: RuntimeConfig) -> Result<Runtime, String> {
        let mut c = Config::new();
        c.consume_fuel(cfg.fuel);
        c.epoch_interruption(cfg.epochs);
        c.wasm_component_model(true);
        c.cranelift_opt_level(wasmtime::OptLevel::Speed);
        // `KILN_PERF_MAP=1` names guest functions for `perf` (/tmp/perf-<pid>.map);
        // docs/performance.md shows how to profile a benchmark with it.
        if std::env::var_os("KILN_PERF_MAP").is_some_and(|v| v == "1") {
            c.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if cfg.pooling {
            let n = cfg.max_instances.max(1);
            let mut p = PoolingAllocationConfig::default();
            p.total_component_instances(n)
                .total_core_instances(n.saturating_mul(4))
                .total_memories(n.saturating_mul(2))
                .total_tables(n.saturating_mul(4))
                .total_stacks(n)
                .max_memory_size(MAX_MEMORY_BYTES as usize)
                .max_core_instances_per_component(32)
                .max_memories_per_component(4)
                .max_tables_per_component(16)
                // With PAGEMAP_SCAN (Linux 6.7+) a returned slot resets only the
                // pages its instance dirtied, with memset, and they stay mapped:
                // the next task's instance takes no page faults on them.
                .pagemap_scan(wasmtime::Enabled::Auto)
                .linear_memory_keep_resident(4 << 20)
                .table_keep_resident(64 << 10);
            c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
        }
        let engine = Engine::new(&c).map_err(|e| match cfg.pooling {
            true => format!(
                "cannot build the Wasm engine with a pool of {} instances: {e} (each reserves address space; fewer tasks at once need fewer)",
                cfg.max_instances
            ),
            false => format!("cannot build the Wasm engine: {e}"),
        })?;
        let mut linker = Linker::<State>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| e.to_string())?;
        Processor::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s).map_err(|e| e.to_string())?;

        let cache = match &cfg.cache_dir {
            Some(dir) => Some(CodeCache::open(dir, &engine)?),
            None => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = engine.weak();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("kiln-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(TICK_MS));
                    match ticker.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| format!("cannot start the epoch thread: {e}"))?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                loaded: Mutex::new(HashMap::new()),
                cache,
                fuel: cfg.fuel,
                pool: cfg.pooling.then_some(cfg.max_instances.max(1)),
                stop,
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn fuel_enabled(&self) -> bool {
        self.inner.fuel
    }

    /// How many processor instances can be live at once: the pool's size,
    /// or `None` with the on-demand allocator (no fixed limit).
    pub fn max_instances(&self) -> Option<u32> {
        self.inner.pool
    }

    /// The id a component's bytes have.
    pub fn id_of(bytes: &[u8]) -> ComponentId {
        Arc::from(blake3::hash(bytes).to_hex().as_str())
    }

    /// A component already loaded in this process, by id.
    pub fn get(&self, id: &str) -> Option<Arc<Loaded>> {
        self.inner.loaded.lock().unwrap().get(id).cloned()
    }

    /// Forget a loaded component, so the next [`load`](Runtime::load) of its
    /// bytes goes to the code cache (or the compiler) again. Live instances
    /// keep their own handle. For benchmarks that measure loading.
    #[doc(hidden)]
    pub fn evict(&self, id: &str) {
        self.inner.loaded.lock().unwrap().remove(id);
    }

    /// Check, compile (or load compiled code from the cache), pre-instantiate
    /// and describe a component. Loading the same bytes twice is free.
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<Loaded>, LoadError> {
        let id = Self::id_of(bytes);
        if let Some(l) = self.get(&id) {
            return Ok(l);
        }
        let engine = &self.inner.engine;
        let (component, from_cache) = match &self.inner.cache {
            Some(cache) => cache.load_or_compile(engine, &id, bytes)?,
            None => (compile(engine, &id, bytes)?, false),
        };
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
        let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
        check_world(&id, &imports, &exports)?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .and_then(ProcessorPre::new)
            .map_err(|e| LoadError::Runtime { id: id.to_string(), reason: format!("cannot link: {e}") })?;
        let info = describe(self, &id, &pre)?;
        let report_name = Arc::from(info.name.as_str());
        let loaded = Arc::new(Loaded { id: id.clone(), info, report_name, size: bytes.len(), imports, exports, from_cache, pre });
        self.inner.loaded.lock().unwrap().insert(id, loaded.clone());
        Ok(loaded)
    }

    /// A fresh store for one instance.
    pub(crate) fn store(&self, limits: &Limits, grants: Arc<Grants>, rng_seed: [u8; 32], clock: VirtualClock) -> Store<State> {
        let mut store = Store::new(&self.inner.engine, State::new(limits.clone(), grants, rng_seed, clock));
        store.limiter(|s| s as &mut dyn wasmtime::ResourceLimiter);
        store
    }
}

fn compile(engine: &Engine, id: &str, bytes: &[u8]) -> Result<Component, LoadError> {
    Component::new(engine, bytes).map_err(|e| LoadError::Invalid { id: id.to_string(), reason: format!("{e:#}") })
}

/// Refuse components built against another WIT before linking fails obscurely.
fn check_world(id: &str, imports: &[String], exports: &[String]) -> Result<(), LoadError> {
    let version_of = |name: &str| name.rsplit_once('@').map(|(_, v)| v.to_string());
    for name in imports.iter().chain(exports) {
        if name.starts_with("kiln:harness/") {
            if let Some(v) = version_of(name) {
                if v != WIT_VERSION {
                    return Err(LoadError::WrongVersion { id: id.to_string(), found: v });
                }
            }
        }
    }
    if !exports.iter().any(|e| e == HOOKS_EXPORT) {
        return Err(LoadError::NotAProcessor { id: id.to_string(), exports: exports.join(", ") });
    }
    if let Some(bad) = imports.iter().find(|i| !i.starts_with("kiln:harness/") && !i.starts_with("wasi:")) {
        return Err(LoadError::UnknownImport { id: id.to_string(), import: bad.clone() });
    }
    Ok(())
}

fn describe(rt: &Runtime, id: &str, pre: &ProcessorPre<State>) -> Result<Info, LoadError> {
    let limits = Limits::default();
    let mut store = rt.store(&limits, Arc::new(Grants::default()), [0; 32], VirtualClock::default());
    if rt.fuel_enabled() {
        store.set_fuel(limits.init_fuel).ok();
    }
    store.set_epoch_deadline(limits.init_deadline_ms / TICK_MS);
    store.data_mut().begin(None);
    let fault = |store: &Store<State>, e: wasmtime::Error| LoadError::Describe { id: id.to_string(), fault: classify(&e, store.data()) };
    let p = pre.instantiate(&mut store).map_err(|e| fault(&store, e))?;
    let d = p.kiln_harness_hooks().call_describe(&mut store).map_err(|e| fault(&store, e))?;
    use super::bindings::kiln::harness::types as t;
    let hooks = d
        .hooks
        .iter()
        .map(|h| match h {
            t::Hook::TaskStart => Hook::TaskStart,
            t::Hook::StepStart => Hook::StepStart,
            t::Hook::BeforeModel => Hook::BeforeModel,
            t::Hook::AfterModel => Hook::AfterModel,
            t::Hook::BeforeTool => Hook::BeforeTool,
            t::Hook::AfterTool => Hook::AfterTool,
            t::Hook::StepEnd => Hook::StepEnd,
            t::Hook::TaskEnd => Hook::TaskEnd,
        })
        .collect();
    let band = match d.band {
        t::Band::Pre => Band::Pre,
        t::Band::Normal => Band::Normal,
        t::Band::Post => Band::Post,
    };
    if d.name.is_empty() || d.name.len() > 64 {
        return Err(LoadError::Runtime { id: id.to_string(), reason: "describe returned an empty or over-long name".into() });
    }
    Ok(Info { name: d.name, version: d.version, hooks, group: d.group, band, after: d.after })
}

/// Feeds `Hash` output into blake3, to turn the engine's compatibility hash into bytes.
struct Blake3Hasher(blake3::Hasher);
impl Hasher for Blake3Hasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Compiled code on disk, authenticated with a host-private key.
struct CodeCache {
    dir: PathBuf,
    key: [u8; 32],
    fingerprint: String,
}

impl CodeCache {
    fn open(dir: &Path, engine: &Engine) -> Result<CodeCache, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create code cache {}: {e}", dir.display()))?;
        let mut h = Blake3Hasher(blake3::Hasher::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
        h.0.update(env!("CARGO_PKG_VERSION").as_bytes());
        let fingerprint = h.0.finalize().to_hex()[..16].to_string();
        let key = host_key(&dir.join("host.key"))?;
        Ok(CodeCache { dir: dir.to_path_buf(), key, fingerprint })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}-{}.cwasm", self.fingerprint))
    }

    fn mac(&self, id: &str, code: &[u8]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(self.fingerprint.as_bytes()).update(id.as_bytes()).update(code);
        h.finalize()
    }

    fn load_or_compile(&self, engine: &Engine, id: &str, bytes: &[u8]) -> Result<(Component, bool), LoadError> {
        let path = self.path(id);
        if let Ok(file) = std::fs::read(&path) {
            if file.len() > 32 {
                let (mac, code) = file.split_at(32);
                if blake3::Hash::from_bytes(mac.try_into().unwrap()) == self.mac(id, code) {
                    // SAFETY: the artifact carries a MAC under this host's private
                    // key over (engine fingerprint, component id, code): this host
                    // compiled it with an engine of the same configuration.
                    if let Ok(c) = unsafe { Component::deserialize(engine, code) } {
                        return Ok((c, true));
                    }
                }
            }
        }
        let component = compile(engine, id, bytes)?;
        if let Ok(code) = component.serialize() {
            let mut file = self.mac(id, &code).as_bytes().to_vec();
            file.extend_from_slice(&code);
            // A cache that cannot be written only costs a recompile next time.
            let _ = write_atomic(&self.dir, &path, &file);
        }
        Ok((component, false))
    }
}

fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// This host's private key for the code cache, made on first use.
fn host_key(path: &Path) -> Result<[u8; 32], String> {
    if let Ok(k) = std::fs::read(path) {
        if let Ok(k) = <[u8; 32]>::try_from(k.as_slice()) {
            return Ok(k);
        }
    }
    // RandomState is seeded from the OS's randomness.
    let mut h = blake3::Hasher::new();
    for _ in 0..4 {
        let s = std::hash::BuildHasher::build_hasher(&std::collections::hash_map::RandomState::new()).finish();
        h.update(&s.to_le_bytes());
    }
    h.update(&std::process::id().to_le_bytes());
    h.update(format!("{:?}", std::time::SystemTime::now()).as_bytes());
    let key = *h.finalize().as_bytes();
    let dir = path.parent().unwrap_or(Path::new("."));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(&key)?;
        tmp.persist_noclobber(path).map_err(|e| e.error)?;
        Ok(())
    };
    match write() {
        Ok(()) => {}
        // Another process made the key first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return host_key(path),
        Err(e) => return Err(format!("cannot write code-cache key {}: {e}", path.display())),
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(key)
}
