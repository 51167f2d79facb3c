//! `loop-guard`: notices when the agent repeats itself and steps in.
//!
//! At before-tool it records each action (tool name + arguments normalized to
//! canonical JSON, so `{"a":1, "b":2}` and `{"b": 2,"a":1}` are the same
//! action); at after-tool it records each observation (tool name + result
//! text with whitespace collapsed). Within the last `window` actions (or
//! observations), a record seen before is a *repeat*:
//!
//! * from `advise_after` repeats on, it advises the model, e.g.
//!   `You repeated search[{"q":"shoes"}] 3 times; try something different`;
//! * from `block_after` repeats on, it blocks the tool call with a reason
//!   (observations are only ever advised on: the call already ran).
//!
//! Config (JSON, every key optional):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `window` | 12 | how many recent actions / observations are remembered |
//! | `advise_after` | 2 | repeats before advice starts (2 = the third identical call) |
//! | `block_after` | 4 | repeats before calls are blocked; must be >= `advise_after` |
//! | `ignore` | `[]` | tool names never counted: read-only tools an agent rightly calls again and again (e.g. `["admissible", "inventory"]`) |
//!
//! Cost: each call hashes what it is given once and does O(1) amortized work
//! on a ring buffer of 64-bit hashes with a count per hash, whatever the
//! length of the task. The logic is the plain type [`LoopGuard`], which runs
//! natively as well (the benchmarks compare it with the component).
//!
//! State (hot swap): the two windows, as JSON lists of hashes.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use kiln_guest::{
    advise, config, Conversation, Hook, Info, Processor, ToolCall, ToolResult, Verdict,
};
use serde::{Deserialize, Serialize};

/// The processor's config; see the crate docs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How many recent actions (and, separately, observations) are remembered.
    pub window: u32,
    /// Repeats of one action before the model is advised.
    pub advise_after: u32,
    /// Repeats of one action before the call is blocked.
    pub block_after: u32,
    /// Tools whose calls and results are never counted (nor take a place
    /// in the windows): read-only tools it is fine to call again.
    pub ignore: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            window: 12,
            advise_after: 2,
            block_after: 4,
            ignore: Vec::new(),
        }
    }
}

impl Config {
    /// Parses and checks a JSON config (empty text means all defaults).
    pub fn from_json(text: &str) -> Result<Self, String> {
        let config: Config = config::parse(NAME, text)?;
        if config.window < 2 {
            return Err(format!(
                "config for `{NAME}` is invalid: `window` must be at least 2 (got {})",
                config.window
            ));
        }
        if config.advise_after == 0 {
            return Err(format!(
                "config for `{NAME}` is invalid: `advise_after` must be at least 1 (a first call is never a repeat)"
            ));
        }
        if config.ignore.iter().any(|name| name.trim().is_empty()) {
            return Err(format!(
                "config for `{NAME}` is invalid: `ignore` lists tool names, and one of them is empty"
            ));
        }
        if config.block_after < config.advise_after {
            return Err(format!(
                "config for `{NAME}` is invalid: `block_after` ({}) must be >= `advise_after` ({})",
                config.block_after, config.advise_after
            ));
        }
        Ok(config)
    }
}

/// What the guard decided about one action or observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to say.
    Allow,
    /// Advise the model with this text (it contains the word "repeat").
    Advise(String),
    /// Block the tool call with this reason.
    Block(String),
}

/// The processor's name, as in its [`Info`].
pub const NAME: &str = "loop-guard";

/// The repeat detector: two windows of recent hashes (actions, observations).
#[derive(Debug, Clone)]
pub struct LoopGuard {
    config: Config,
    actions: Window,
    observations: Window,
}

impl Default for LoopGuard {
    fn default() -> Self {
        LoopGuard::new(Config::default())
    }
}

impl LoopGuard {
    /// A guard with empty windows.
    pub fn new(config: Config) -> Self {
        let capacity = config.window as usize;
        LoopGuard {
            config,
            actions: Window::new(capacity),
            observations: Window::new(capacity),
        }
    }

    /// The config in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Records the action `name(arguments)` and decides about it.
    pub fn observe_call(&mut self, name: &str, arguments: &str) -> Decision {
        if self.ignores(name) {
            return Decision::Allow;
        }
        let seen = self.actions.push(action_hash(name, arguments));
        let repeats = seen - 1;
        if repeats < self.config.advise_after {
            return Decision::Allow;
        }
        let arguments = normalize_arguments(arguments);
        if repeats >= self.config.block_after {
            Decision::Block(format!(
                "{} was already called {repeats} times with these arguments in the last {} calls; \
                 change the arguments or use another tool",
                describe_action(name, &arguments),
                self.config.window
            ))
        } else {
            Decision::Advise(format!(
                "You repeated {} {seen} times; try something different",
                describe_action(name, &arguments)
            ))
        }
    }

    /// Records what the tool `name` returned and decides about it. Never blocks.
    pub fn observe_result(&mut self, name: &str, content: &str) -> Decision {
        if self.ignores(name) {
            return Decision::Allow;
        }
        let seen = self.observations.push(observation_hash(name, content));
        let repeats = seen - 1;
        if repeats >= self.config.advise_after {
            Decision::Advise(format!(
                "{name} returned the same result {seen} times; repeating the call will not change it, \
                 so try something different"
            ))
        } else {
            Decision::Allow
        }
    }

    fn ignores(&self, name: &str) -> bool {
        self.config.ignore.iter().any(|ignored| ignored == name)
    }

    /// The windows, for a successor (JSON).
    pub fn save(&self) -> Vec<u8> {
        let state = SavedState {
            actions: self.actions.ring.iter().copied().collect(),
            observations: self.observations.ring.iter().copied().collect(),
        };
        serde_json::to_vec(&state).expect("a list of integers always serializes")
    }

    /// Takes over a predecessor's windows (keeping the newest `window` entries).
    pub fn load(&mut self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() {
            return Ok(());
        }
        let state: SavedState = serde_json::from_slice(state).map_err(|error| {
            format!("`{NAME}` cannot load this state (expected {{\"actions\": [...], \"observations\": [...]}}): {error}")
        })?;
        let capacity = self.config.window as usize;
        self.actions = Window::from_hashes(capacity, &state.actions);
        self.observations = Window::from_hashes(capacity, &state.observations);
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedState {
    actions: Vec<u64>,
    observations: Vec<u64>,
}

/// A hasher for keys that already are hashes: the map needs no second hash,
/// and no random seed, so lookups are deterministic and cheap.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// The last `capacity` hashes, oldest first, with a count per distinct hash.
#[derive(Debug, Clone)]
struct Window {
    capacity: usize,
    ring: VecDeque<u64>,
    counts: HashMap<u64, u32, BuildHasherDefault<PassThroughHasher>>,
}

impl Window {
    fn new(capacity: usize) -> Self {
        Window {
            capacity,
            ring: VecDeque::with_capacity(capacity),
            counts: HashMap::with_capacity_and_hasher(capacity, Default::default()),
        }
    }

    fn from_hashes(capacity: usize, hashes: &[u64]) -> Self {
        let mut window = Window::new(capacity);
        let start = hashes.len().saturating_sub(capacity);
        for &hash in &hashes[start..] {
            window.push(hash);
        }
        window
    }

    /// Adds `hash`, evicting the oldest when full; returns how many times
    /// `hash` is now in the window (at least 1).
    fn push(&mut self, hash: u64) -> u32 {
        if self.ring.len() == self.capacity {
            if let Some(oldest) = self.ring.pop_front() {
                if let Some(count) = self.counts.get_mut(&oldest) {
                    *count -= 1;
                    if *count == 0 {
                        self.counts.remove(&oldest);
                    }
                }
            }
        }
        self.ring.push_back(hash);
        let count = self.counts.entry(hash).or_insert(0);
        *count += 1;
        *count
    }
}

/// FNV-1a, 64 bit, fed in pieces: stable across builds and platforms, so
/// saved state stays meaningful for a successor compiled elsewhere. Hashing
/// streams the normalized text straight into it instead of building the
/// text first: no allocation per call but the JSON parse.
struct Fnv(u64);

impl Fnv {
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn byte(&mut self, byte: u8) {
        self.0 ^= u64::from(byte);
        self.0 = self.0.wrapping_mul(Self::PRIME);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.byte(byte);
        }
    }

    /// Ends a part, so ("ab", "c") and ("a", "bc") differ.
    fn end_part(&mut self) {
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(Self::PRIME);
    }

    fn part(&mut self, bytes: &[u8]) {
        self.bytes(bytes);
        self.end_part();
    }

    /// The text with whitespace runs collapsed to one space, trimmed: the
    /// bytes of `collapse_whitespace(text)`. Each target gets the loop that
    /// is fastest there (same bytes hashed; the tests check both loops):
    /// in Wasm [`Fnv::collapsed_chunked`], natively
    /// [`Fnv::collapsed_by_words`], which natively is ~25% faster.
    fn collapsed(&mut self, text: &str) {
        if cfg!(target_family = "wasm") {
            self.collapsed_chunked(text)
        } else {
            self.collapsed_by_words(text)
        }
    }

    /// Word by word with `split_whitespace`.
    fn collapsed_by_words(&mut self, text: &str) {
        for (i, word) in text.split_whitespace().enumerate() {
            if i > 0 {
                self.bytes(b" ");
            }
            self.bytes(word.as_bytes());
        }
    }

    /// Eight ASCII bytes at a time, unrolled: in Wasm every loop iteration
    /// also pays a fuel and an epoch check, and the loop over characters of
    /// `split_whitespace` ran 3.5x slower than native code (this one takes
    /// ~15% off loop-guard's two hook calls there). A chunk holding a
    /// non-ASCII byte goes character by character, so Unicode whitespace
    /// (U+00A0, U+3000, ...) separates words as in `split_whitespace`.
    fn collapsed_chunked(&mut self, text: &str) {
        let bytes = text.as_bytes();
        let mut words = Words::default();
        let mut i = 0;
        while i < bytes.len() {
            let end = (i + 8).min(bytes.len());
            match <&[u8; 8]>::try_from(&bytes[i..end]) {
                Ok(chunk) if u64::from_le_bytes(*chunk) & 0x8080_8080_8080_8080 == 0 => {
                    for &byte in chunk {
                        // The ASCII characters `char::is_whitespace` accepts.
                        let white = byte == b' ' || byte.wrapping_sub(b'\t') < 5;
                        words.feed(self, white, &[byte]);
                    }
                    i = end;
                }
                _ => {
                    // Up to the chunk's end, or just past it when a character
                    // straddles it.
                    while i < end {
                        let c = text[i..].chars().next().expect("i is on a char boundary");
                        let len = c.len_utf8();
                        words.feed(self, c.is_whitespace(), &bytes[i..i + len]);
                        i += len;
                    }
                }
            }
        }
    }
}

/// Where [`Fnv::collapsed_chunked`] is: inside a word or a run of whitespace.
#[derive(Default)]
struct Words {
    /// A word has been hashed (leading whitespace leaves nothing).
    started: bool,
    /// Whitespace since the last word: one space goes before the next word.
    space: bool,
}

impl Words {
    #[inline(always)]
    fn feed(&mut self, hash: &mut Fnv, white: bool, bytes: &[u8]) {
        if white {
            self.space = self.started;
            return;
        }
        if self.space {
            hash.byte(b' ');
            self.space = false;
        }
        self.started = true;
        hash.bytes(bytes);
    }
}

impl std::io::Write for Fnv {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.bytes(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The hash of an action: its name and its arguments as
/// [`normalize_arguments`] writes them.
fn action_hash(name: &str, arguments: &str) -> u64 {
    let mut hash = Fnv::new();
    hash.part(b"action");
    hash.part(name.as_bytes());
    match serde_json::from_str::<serde_json::Value>(arguments) {
        Ok(value) => serde_json::to_writer(&mut hash, &value).expect("hashing cannot fail"),
        Err(_) => hash.collapsed(arguments),
    }
    hash.end_part();
    hash.0
}

fn observation_hash(name: &str, content: &str) -> u64 {
    let mut hash = Fnv::new();
    hash.part(b"observation");
    hash.part(name.as_bytes());
    hash.collapsed(content);
    hash.end_part();
    hash.0
}

/// Canonical JSON (sorted keys, no spaces) when the arguments parse, else the
/// text with whitespace runs collapsed.
pub fn normalize_arguments(arguments: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(arguments) {
        Ok(value) => value.to_string(),
        Err(_) => collapse_whitespace(arguments),
    }
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `name[arguments]`, with long arguments shortened for the model's eyes.
fn describe_action(name: &str, arguments: &str) -> String {
    const SHOWN: usize = 80;
    match arguments.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{name}[{}...]", &arguments[..cut]),
        None => format!("{name}[{arguments}]"),
    }
}

/// The component: [`LoopGuard`] at before-tool and after-tool.
#[derive(Default)]
pub struct LoopGuardProcessor {
    guard: LoopGuard,
}

impl Processor for LoopGuardProcessor {
    fn describe() -> Info {
        Info::new(NAME, env!("CARGO_PKG_VERSION"))
            .hooks([Hook::BeforeTool, Hook::AfterTool])
            .group("loop-guard")
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.guard = LoopGuard::new(Config::from_json(config)?);
        Ok(())
    }

    fn save_state(&self) -> Vec<u8> {
        self.guard.save()
    }

    fn load_state(&mut self, state: &[u8]) -> Result<(), String> {
        self.guard.load(state)
    }

    fn on_before_tool(&mut self, _conv: &Conversation<'_>, call: &ToolCall<'_>) -> Verdict {
        match self.guard.observe_call(&call.name(), &call.arguments()) {
            Decision::Allow => Verdict::Pass,
            Decision::Advise(text) => {
                advise(&text);
                Verdict::Pass
            }
            Decision::Block(reason) => Verdict::Block(reason),
        }
    }

    fn on_after_tool(
        &mut self,
        _conv: &Conversation<'_>,
        call: &ToolCall<'_>,
        result: &ToolResult<'_>,
    ) -> Verdict {
        if let Decision::Advise(text) = self
            .guard
            .observe_result(&call.name(), &result.content())
        {
            advise(&text);
        }
        Verdict::Pass
    }
}

kiln_guest::export!(LoopGuardProcessor);

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_guest::testing::TestHost;
    use kiln_guest::Call;

    fn guard(window: u32, advise_after: u32, block_after: u32) -> LoopGuard {
        LoopGuard::new(Config {
            window,
            advise_after,
            block_after,
            ..Config::default()
        })
    }

    #[test]
    fn ignored_tools_are_never_counted_nor_crowd_the_window() {
        let config = Config::from_json(r#"{"window": 3, "advise_after": 1, "ignore": ["admissible"]}"#).unwrap();
        let mut guard = LoopGuard::new(config);
        assert_eq!(guard.observe_call("go", r#"{"to": "north"}"#), Decision::Allow);
        for _ in 0..10 {
            assert_eq!(guard.observe_call("admissible", "{}"), Decision::Allow);
            assert_eq!(guard.observe_result("admissible", "go north, look"), Decision::Allow);
        }
        // `go north` is still in the 3-call window: ignored calls took no place.
        assert!(matches!(guard.observe_call("go", r#"{"to": "north"}"#), Decision::Advise(_)));
        let empty = Config::from_json(r#"{"ignore": [" "]}"#).unwrap_err();
        assert!(empty.contains("`ignore` lists tool names"), "{empty}");
        let wrong = Config::from_json(r#"{"ignore": "admissible"}"#).unwrap_err();
        assert!(wrong.contains("is invalid at `ignore`: invalid type: string"), "{wrong}");
    }

    #[test]
    fn advises_then_blocks_an_identical_call() {
        let mut guard = LoopGuard::default();
        assert_eq!(
            guard.observe_call("search", r#"{"q": "shoes"}"#),
            Decision::Allow
        );
        assert_eq!(
            guard.observe_call("search", r#"{"q": "shoes"}"#),
            Decision::Allow
        );
        let Decision::Advise(text) = guard.observe_call("search", r#"{"q": "shoes"}"#) else {
            panic!("the third identical call should be advised on");
        };
        assert_eq!(
            text,
            r#"You repeated search[{"q":"shoes"}] 3 times; try something different"#
        );
        assert!(matches!(
            guard.observe_call("search", r#"{"q": "shoes"}"#),
            Decision::Advise(_)
        ));
        let Decision::Block(reason) = guard.observe_call("search", r#"{"q": "shoes"}"#) else {
            panic!("the fifth identical call should be blocked");
        };
        assert!(reason.contains("already called 4 times"), "{reason}");
    }

    /// The streamed hashes are the FNV-1a of the normalized texts, part by
    /// part, as saved state from earlier builds expects.
    #[test]
    fn streamed_hashes_equal_hashes_of_the_normalized_text() {
        fn parts(parts: &[&[u8]]) -> u64 {
            let mut hash = Fnv::new();
            for part in parts {
                hash.part(part);
            }
            hash.0
        }
        for arguments in [r#"{ "b": [1, 2], "a": "x  y" }"#, "not json\t at   all ", ""] {
            let normalized = normalize_arguments(arguments);
            assert_eq!(
                action_hash("search", arguments),
                parts(&[b"action", b"search", normalized.as_bytes()])
            );
        }
        for content in [
            "  [1] Red shoe\n\n  size 42  ",
            "",
            " \t\n",
            "a\u{0b}b\u{0c}c\rd",
            "caf\u{e9}\u{a0}\u{a0}na\u{ef}ve \u{3000}\u{1f45f} x\u{85}y\u{2028}",
        ] {
            assert_eq!(
                observation_hash("view", content),
                parts(&[b"observation", b"view", collapse_whitespace(content).as_bytes()]),
                "{content:?}"
            );
        }
    }

    /// The chunked hashing agrees with `collapse_whitespace` on texts mixing
    /// ASCII, Unicode whitespace and multi-byte characters at every offset
    /// relative to the 8-byte chunks.
    #[test]
    fn chunked_collapsing_equals_the_reference_on_mixed_texts() {
        fn parts(parts: &[&[u8]]) -> u64 {
            let mut hash = Fnv::new();
            for part in parts {
                hash.part(part);
            }
            hash.0
        }
        const ALPHABET: [&str; 12] = [
            "a", "b", " ", "  ", "\t", "\n", "\u{e9}", "\u{a0}", "\u{3000}", "\u{1f45f}", "\u{0b}", "xyz",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..3_000 {
            let mut text = String::new();
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            // Mostly short texts; every third one long enough to fill the
            // hashing buffer (256 bytes) a few times.
            let pieces = if round % 3 == 0 { 100 + (seed >> 57) } else { seed >> 58 };
            for _ in 0..pieces {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                text.push_str(ALPHABET[(seed >> 33) as usize % ALPHABET.len()]);
            }
            assert_eq!(
                observation_hash("t", &text),
                parts(&[b"observation", b"t", collapse_whitespace(&text).as_bytes()]),
                "{text:?}"
            );
            // Both loops, whichever this target uses.
            let reference = parts(&[collapse_whitespace(&text).as_bytes()]);
            for collapse in [Fnv::collapsed_chunked, Fnv::collapsed_by_words] {
                let mut hash = Fnv::new();
                collapse(&mut hash, &text);
                hash.end_part();
                assert_eq!(hash.0, reference, "{text:?}");
            }
        }
    }

    #[test]
    fn key_order_and_spacing_do_not_make_a_new_action() {
        let mut guard = guard(8, 1, 5);
        guard.observe_call("buy", r#"{"item": 3, "size": "M"}"#);
        assert!(matches!(
            guard.observe_call("buy", r#"{ "size":"M","item":3 }"#),
            Decision::Advise(_)
        ));
    }

    #[test]
    fn different_tools_or_arguments_are_different_actions() {
        let mut guard = guard(8, 1, 2);
        assert_eq!(
            guard.observe_call("search", r#"{"q":"a"}"#),
            Decision::Allow
        );
        assert_eq!(
            guard.observe_call("search", r#"{"q":"b"}"#),
            Decision::Allow
        );
        assert_eq!(
            guard.observe_call("lookup", r#"{"q":"a"}"#),
            Decision::Allow
        );
        // Malformed arguments still compare, by collapsed whitespace.
        assert_eq!(guard.observe_call("search", "{q: a"), Decision::Allow);
        assert!(matches!(
            guard.observe_call("search", "{q:   a"),
            Decision::Advise(_)
        ));
    }

    #[test]
    fn repeats_older_than_the_window_are_forgotten() {
        let mut guard = guard(3, 1, 2);
        guard.observe_call("a", "{}");
        guard.observe_call("b", "{}");
        guard.observe_call("c", "{}");
        // The window holds a, b, c; a fourth entry first evicts the oldest
        // ("a"), so this "a" counts as new.
        assert_eq!(guard.observe_call("a", "{}"), Decision::Allow);
        assert!(matches!(guard.observe_call("a", "{}"), Decision::Advise(_)));
        assert!(matches!(guard.observe_call("a", "{}"), Decision::Block(_)));
    }

    #[test]
    fn the_window_never_holds_more_than_its_capacity() {
        let mut guard = guard(4, 1, 2);
        for round in 0..1000u32 {
            guard.observe_call("t", &format!("{{\"n\": {}}}", round % 7));
        }
        assert_eq!(guard.actions.ring.len(), 4);
        assert_eq!(guard.actions.counts.values().sum::<u32>(), 4);
    }

    #[test]
    fn repeated_observations_are_advised_not_blocked() {
        let mut guard = guard(6, 1, 1);
        assert_eq!(
            guard.observe_result("search", "no results"),
            Decision::Allow
        );
        let Decision::Advise(text) = guard.observe_result("search", "no  results\n") else {
            panic!("the same result twice should be advised on");
        };
        assert!(text.contains("repeat"), "{text}");
        assert!(matches!(
            guard.observe_result("search", "no results"),
            Decision::Advise(_)
        ));
    }

    #[test]
    fn config_defaults_and_errors() {
        assert_eq!(Config::from_json("").unwrap(), Config::default());
        assert_eq!(Config::from_json(r#"{"window": 5}"#).unwrap().window, 5);
        let error = Config::from_json(r#"{"windw": 5}"#).unwrap_err();
        assert!(error.contains("unknown field `windw`"), "{error}");
        let error = Config::from_json(r#"{"advise_after": 3, "block_after": 2}"#).unwrap_err();
        assert!(
            error.contains("`block_after` (2) must be >= `advise_after` (3)"),
            "{error}"
        );
        assert!(Config::from_json(r#"{"window": 1}"#).is_err());
        assert!(Config::from_json(r#"{"advise_after": 0}"#).is_err());
    }

    #[test]
    fn state_hands_the_windows_to_a_successor() {
        let mut first = guard(8, 1, 3);
        first.observe_call("search", "{}");
        first.observe_result("search", "x");
        let state = first.save();
        let mut second = guard(8, 1, 3);
        second.load(&state).unwrap();
        assert!(matches!(
            second.observe_call("search", "{}"),
            Decision::Advise(_)
        ));
        assert!(matches!(
            second.observe_result("search", "x"),
            Decision::Advise(_)
        ));
        let error = second.load(b"garbage").unwrap_err();
        assert!(error.contains("cannot load this state"), "{error}");
        assert_eq!(second.load(b""), Ok(()));
    }

    #[test]
    fn the_component_blocks_at_before_tool_and_advises_at_after_tool() {
        let mut host = TestHost::new();
        let mut processor = LoopGuardProcessor::default();
        host.configure(&mut processor, r#"{"advise_after": 1, "block_after": 2}"#)
            .unwrap();
        let call = Call::new("c1", "search", r#"{"q":"red shoes"}"#);
        assert_eq!(
            host.before_tool(&mut processor, call.clone()).verdict,
            Verdict::Pass
        );
        assert_eq!(host.advice(), None);
        assert_eq!(
            host.after_tool(&mut processor, call.clone(), "nothing", false)
                .verdict,
            Verdict::Pass
        );
        assert_eq!(
            host.before_tool(&mut processor, call.clone()).verdict,
            Verdict::Pass
        );
        assert!(host.advice().unwrap().contains("repeated"));
        host.after_tool(&mut processor, call.clone(), "nothing", false);
        assert!(host.advice().unwrap().contains("repeat"));
        let outcome = host.before_tool(&mut processor, call);
        assert!(
            matches!(outcome.verdict, Verdict::Block(ref reason) if reason.contains("search["))
        );
    }

    #[test]
    fn the_component_refuses_bad_config() {
        let host = TestHost::new();
        let mut processor = LoopGuardProcessor::default();
        assert!(host
            .configure(&mut processor, r#"{"block": 1}"#)
            .unwrap_err()
            .contains("`block`"));
    }
}
