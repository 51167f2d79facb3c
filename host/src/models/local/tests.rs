//! Tests over tiny GGUF files written here (no binary fixture is committed),
//! and one over the real default model when `make setup-model` has run.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde_json::json;

use super::*;
use crate::chat::{Message, ToolCall, ToolSpec};

const WIDTH: usize = 64;
const FFN: usize = 128;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const CONTROL: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// What kind of tiny model to write.
#[derive(Clone)]
struct Fixture {
    architecture: &'static str,
    tokenizer: &'static str,
    context: u32,
    /// The head always prefers `<|im_end|>` (else: never a control token).
    ends_at_once: bool,
    seed: u64,
    /// Write the attention output matrix with a wrong shape.
    misshapen: bool,
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture {
            architecture: "llama",
            tokenizer: "gpt2",
            context: 2048,
            ends_at_once: false,
            seed: 1,
            misshapen: false,
        }
    }
}

/// GPT-2's byte-to-character table, the alphabet of byte-level BPE.
fn byte_chars() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap()
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap()
            }
        })
        .collect()
}

impl Fixture {
    /// The vocabulary: control tokens, the 256 bytes, two merges.
    fn tokens() -> Vec<String> {
        let mut tokens: Vec<String> = CONTROL.iter().map(|s| s.to_string()).collect();
        tokens.extend(byte_chars().into_iter().map(String::from));
        tokens.extend(["Ġt".to_owned(), "ac".to_owned()]);
        tokens
    }

    fn write(&self, path: &Path) {
        let tokens = Self::tokens();
        let vocab = tokens.len();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed);
        let mut random = |rows: usize, cols: usize, scale: f32| -> Vec<f32> {
            (0..rows * cols).map(|_| ((rng.next_u32() as f32 / u32::MAX as f32) * 2.0 - 1.0) * scale).collect()
        };
        let tensor = |values: Vec<f32>, shape: &[usize], dtype: GgmlDType| -> QTensor {
            QTensor::quantize(&Tensor::from_vec(values, shape, &Device::Cpu).unwrap(), dtype).unwrap()
        };
        // Dimension 0 carries a constant: every embedding has 4 there and no
        // layer writes to it, so after the final norm it is positive and the
        // head's column 0 decides whether control tokens win or lose.
        let mut embed = random(vocab, WIDTH, 1.0);
        for row in 0..vocab {
            embed[row * WIDTH] = 4.0;
        }
        let zero_row_0 = |mut m: Vec<f32>, cols: usize| {
            m[..cols].iter_mut().for_each(|v| *v = 0.0);
            m
        };
        let mut head = random(vocab, WIDTH, 1.0);
        for row in 0..vocab {
            head[row * WIDTH] = if row < CONTROL.len() {
                if self.ends_at_once && row == 2 {
                    400.0
                } else {
                    -400.0
                }
            } else {
                0.0
            };
        }
        let kv = KV_HEADS * WIDTH / HEADS;
        let mut owned: Vec<(String, QTensor)> = vec![
            ("token_embd.weight".into(), tensor(embed, &[vocab, WIDTH], GgmlDType::Q8_0)),
            ("output.weight".into(), tensor(head, &[vocab, WIDTH], GgmlDType::Q8_0)),
            ("output_norm.weight".into(), tensor(vec![1.0; WIDTH], &[WIDTH], GgmlDType::F32)),
        ];
        for layer in 0..2 {
            let name = |part: &str| format!("blk.{layer}.{part}.weight");
            let out_shape = if self.misshapen { [WIDTH, WIDTH / 2] } else { [WIDTH, WIDTH] };
            owned.extend([
                (name("attn_norm"), tensor(vec![1.0; WIDTH], &[WIDTH], GgmlDType::F32)),
                (name("ffn_norm"), tensor(vec![1.0; WIDTH], &[WIDTH], GgmlDType::F32)),
                (name("attn_q"), tensor(random(WIDTH, WIDTH, 0.3), &[WIDTH, WIDTH], GgmlDType::Q4_1)),
                (name("attn_k"), tensor(random(kv, WIDTH, 0.3), &[kv, WIDTH], GgmlDType::Q4_1)),
                (name("attn_v"), tensor(random(kv, WIDTH, 0.3), &[kv, WIDTH], GgmlDType::Q4_1)),
                (
                    name("attn_output"),
                    tensor(
                        zero_row_0(random(out_shape[0], out_shape[1], 0.3), out_shape[1]),
                        &out_shape,
                        GgmlDType::Q4_1,
                    ),
                ),
                (name("ffn_gate"), tensor(random(FFN, WIDTH, 0.3), &[FFN, WIDTH], GgmlDType::Q4_1)),
                (name("ffn_up"), tensor(random(FFN, WIDTH, 0.3), &[FFN, WIDTH], GgmlDType::Q4_1)),
                (name("ffn_down"), tensor(zero_row_0(random(WIDTH, FFN, 0.3), FFN), &[WIDTH, FFN], GgmlDType::Q4_1)),
            ]);
        }
        let arch = self.architecture;
        let strings = |items: Vec<String>| Value::Array(items.into_iter().map(Value::String).collect());
        let types: Vec<Value> = (0..vocab).map(|i| Value::I32(if i < CONTROL.len() { 3 } else { 1 })).collect();
        let metadata: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String(arch.into())),
            (format!("{arch}.block_count"), Value::U32(2)),
            (format!("{arch}.context_length"), Value::U32(self.context)),
            (format!("{arch}.embedding_length"), Value::U32(WIDTH as u32)),
            (format!("{arch}.feed_forward_length"), Value::U32(FFN as u32)),
            (format!("{arch}.attention.head_count"), Value::U32(HEADS as u32)),
            (format!("{arch}.attention.head_count_kv"), Value::U32(KV_HEADS as u32)),
            (format!("{arch}.rope.freq_base"), Value::F32(10_000.0)),
            (format!("{arch}.attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
            ("tokenizer.ggml.model".into(), Value::String(self.tokenizer.into())),
            ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
            ("tokenizer.ggml.tokens".into(), strings(tokens)),
            ("tokenizer.ggml.token_type".into(), Value::Array(types)),
            ("tokenizer.ggml.merges".into(), strings(vec!["Ġ t".into(), "a c".into()])),
            ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
            ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
            ("tokenizer.chat_template".into(), Value::String(template::CHATML.into())),
        ];
        let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tensors: Vec<(&str, &QTensor)> = owned.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut file = std::fs::File::create(path).unwrap();
        gguf_file::write(&mut file, &metadata, &tensors).unwrap();
    }

    /// Write into a fresh temp dir; keep the dir alive while the path is used.
    fn written(&self) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        self.write(&path);
        (dir, path)
    }

    fn open(&self, options: &str) -> (tempfile::TempDir, Local) {
        let (dir, path) = self.written();
        let local = Local::open(&format!("{}{options}", path.display()), None, None).unwrap();
        (dir, local)
    }
}

fn ask(text: &str) -> ModelRequest {
    ModelRequest { system: "You are terse.".into(), messages: vec![Message::user(text)], ..Default::default() }
}

fn raw(response: &ModelResponse) -> serde_json::Value {
    serde_json::from_str(response.raw.as_deref().unwrap()).unwrap()
}

fn load_error(path: &Path, is_default: bool) -> String {
    match GgufFile::open(path, is_default).and_then(|f| Engine::load(f, None, 1, LoadOptions::default())) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_tokenizer_round_trips_and_keeps_special_tokens_whole() {
    let (_dir, path) = Fixture::default().written();
    let engine = Engine::load(GgufFile::open(&path, false).unwrap(), None, 1, LoadOptions::default()).unwrap();
    let ids = engine.encode("<|im_start|>user\nthe tact<|im_end|>").unwrap();
    assert_eq!(ids[0], 1, "<|im_start|> is one token");
    assert_eq!(*ids.last().unwrap(), 2, "<|im_end|> is one token");
    let merged = Fixture::tokens().iter().position(|t| t == "Ġt").unwrap() as u32;
    assert!(ids.contains(&merged), "the ` t` merge applies: {ids:?}");
    for text in ["plain ascii", "café ✓ 1234", "  spaced\n\nlines  ", "<|im_start|>assistant\n"] {
        assert_eq!(engine.vocab.decode(&engine.encode(text).unwrap()).unwrap(), text);
    }
    let digits = engine.encode("2024").unwrap();
    assert_eq!(digits.len(), 4, "the smollm pre-tokenizer splits digits one by one");
}

#[test]
fn the_prompt_is_the_models_chat_template_over_the_text_action_format() {
    let (_dir, local) = Fixture::default().open("");
    let request = ModelRequest {
        system: "Sys.".into(),
        messages: vec![
            Message::user("go"),
            Message::assistant("", vec![ToolCall { id: "c1".into(), name: "look".into(), arguments: "{}".into() }]),
            Message::tool("c1", "a room"),
        ],
        tools: vec![ToolSpec::new("look", "Look around.", json!({"type": "object"}))],
        ..Default::default()
    };
    let lowered = text_actions::lower_request(&request);
    let engine = local.engine().lock().unwrap();
    let prompt = engine.vocab.decode(&engine.prompt(&turns_of(&lowered)).unwrap()).unwrap();
    assert!(prompt.starts_with("<|im_start|>system\nSys.\n\n# Tools"), "{prompt}");
    assert!(
        prompt.ends_with(
            "<|im_start|>user\ngo<|im_end|>\n<|im_start|>assistant\nAction: look {}<|im_end|>\n\
             <|im_start|>user\nObservation from look:\na room<|im_end|>\n<|im_start|>assistant\n"
        ),
        "{prompt}"
    );
}

#[test]
fn generation_stops_at_the_end_of_turn_token() {
    let (_dir, local) = Fixture { ends_at_once: true, ..Fixture::default() }.open("");
    let response = local.answer(&ask("hello")).unwrap();
    assert_eq!(response.text, "");
    assert_eq!(response.usage.output_tokens, 1, "the end-of-turn token is counted");
    assert_eq!(raw(&response)["finish"], "end_of_turn");
    assert!(response.usage.input_tokens > 10);
}

#[test]
fn max_tokens_cuts_a_reply_that_never_ends() {
    let (_dir, local) = Fixture::default().open("?max_tokens=7");
    let response = local.answer(&ask("hello")).unwrap();
    assert_eq!(response.usage.output_tokens, 7);
    assert_eq!(raw(&response)["finish"], "length");
    assert!(!response.text.is_empty());
    let longer = local.answer(&ModelRequest { max_tokens: Some(9), ..ask("hello") }).unwrap();
    assert_eq!(longer.usage.output_tokens, 9, "the request's own limit wins");
}

#[test]
fn the_same_seed_gives_the_same_reply_warm_or_cold() {
    let fixture = Fixture::default();
    let (_dir, local) = fixture.open("?temperature=1&max_tokens=24");
    let with_seed = |seed| local.answer(&ModelRequest { seed, ..ask("tell me") }).unwrap().text;
    let first = with_seed(7);
    assert_eq!(with_seed(7), first, "a warm cache gives the same reply");
    assert_ne!(with_seed(8), first, "another seed samples another reply");
    let (_dir2, cold) = fixture.open("?temperature=1&max_tokens=24");
    assert_eq!(cold.answer(&ModelRequest { seed: 7, ..ask("tell me") }).unwrap().text, first, "a cold engine too");
}

#[test]
fn a_longer_conversation_reuses_the_cached_prefix_with_identical_results() {
    let fixture = Fixture::default();
    let system = "You are a careful agent. ".repeat(12);
    let step = |extra: usize| {
        let mut messages = vec![Message::user("first question")];
        for i in 0..extra {
            messages.push(Message::assistant(format!("answer {i}"), Vec::new()));
            messages.push(Message::user(format!("follow-up {i}")));
        }
        ModelRequest {
            system: system.clone(),
            messages,
            temperature: Some(0.8),
            max_tokens: Some(12),
            seed: 3,
            ..Default::default()
        }
    };
    let (_dir, warm) = fixture.open("");
    for extra in 0..3 {
        warm.answer(&step(extra)).unwrap();
    }
    let warm_reply = warm.answer(&step(3)).unwrap();
    let stats = warm.engine().lock().unwrap().stats;
    assert!(stats.reused_tokens >= 3 * CHUNK as u64, "later steps reuse the cache: {stats:?}");

    let (_dir2, cold) = fixture.open("");
    let cold_reply = cold.answer(&step(3)).unwrap();
    assert_eq!(warm_reply, cold_reply, "reuse changes nothing in the answer");
    assert_eq!(cold.engine().lock().unwrap().stats.reused_tokens, 0);
}

#[test]
fn another_tasks_request_does_not_wipe_a_live_session() {
    let (_dir, local) = Fixture::default().open("?sessions=2");
    let system = "Shared system prompt. ".repeat(10);
    let task = |name: &str, turns: usize| {
        let mut messages = vec![Message::user(format!("task {name} ").repeat(60))];
        for i in 0..turns {
            messages.push(Message::assistant(format!("step {i}"), Vec::new()));
            messages.push(Message::user(format!("observation {i} of {name} ").repeat(3)));
        }
        ModelRequest { system: system.clone(), messages, max_tokens: Some(2), ..Default::default() }
    };
    local.answer(&task("a", 0)).unwrap();
    local.answer(&task("b", 0)).unwrap();
    let before = local.engine().lock().unwrap().stats.prefill_tokens;
    local.answer(&task("a", 1)).unwrap();
    let after = local.engine().lock().unwrap().stats.prefill_tokens;
    let a_prompt = {
        let engine = local.engine().lock().unwrap();
        engine.prompt(&turns_of(&text_actions::lower_request(&task("a", 1)))).unwrap().len()
    };
    assert!(
        (after - before) as usize <= a_prompt - 8 * CHUNK,
        "task a kept its history while task b ran: ran {} of {a_prompt} prompt tokens",
        after - before
    );
}

#[test]
fn a_prompt_longer_than_the_window_is_refused_not_truncated() {
    let (_dir, local) = Fixture { context: 64, ..Fixture::default() }.open("");
    let error = local.answer(&ask(&"word ".repeat(100))).unwrap_err();
    let ModelError::Refused { body, .. } = &error else { panic!("expected a refusal, got {error:?}") };
    assert!(body.contains("the context window of") && body.contains("is 64 tokens"), "{body}");
    let (_dir, capped) = Fixture::default().open("?context=32");
    assert!(
        matches!(capped.answer(&ask(&"word ".repeat(40))), Err(ModelError::Refused { .. })),
        "`context` caps the window"
    );
}

#[test]
fn missing_corrupt_and_unsupported_files_say_which_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.gguf");
    let message = load_error(&missing, true);
    assert!(message.contains("nowhere.gguf does not exist") && message.contains("make setup-model"), "{message}");
    assert!(!load_error(&missing, false).contains("make setup-model"), "a user's own file has no fetch command");

    let garbage = dir.path().join("garbage.gguf");
    std::fs::write(&garbage, b"PK\x03\x04 this is a zip, not a model").unwrap();
    let message = load_error(&garbage, false);
    assert!(message.contains("garbage.gguf is not a GGUF file") && message.contains("not `GGUF`"), "{message}");
    std::fs::write(&garbage, b"GG").unwrap();
    assert!(load_error(&garbage, false).contains("only 2 bytes long"));

    let (_keep, path) = Fixture::default().written();
    let bytes = std::fs::read(&path).unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let message = load_error(&truncated, true);
    assert!(message.contains("truncated.gguf is corrupt: it is truncated: tensor `"), "{message}");
    assert!(message.contains("run `make setup-model` to fetch it again"), "{message}");
    let header_cut = dir.path().join("header.gguf");
    std::fs::write(&header_cut, &bytes[..200]).unwrap();
    assert!(load_error(&header_cut, false).contains("header.gguf is corrupt: its header does not parse"));

    let (_keep, mamba) = Fixture { architecture: "mamba", ..Fixture::default() }.written();
    let message = load_error(&mamba, false);
    assert!(message.contains("needs architecture `mamba`") && message.contains("architectures: llama"), "{message}");
    let (_keep, spm) = Fixture { tokenizer: "llama", ..Fixture::default() }.written();
    assert!(load_error(&spm, false).contains("needs tokenizer `llama`"));
    let (_keep, misshapen) = Fixture { misshapen: true, ..Fixture::default() }.written();
    assert!(load_error(&misshapen, false).contains("tensor `blk.0.attn_output.weight` has shape [64, 32]"));
}

#[test]
fn a_corrupt_default_model_fails_its_checksum() {
    let (_dir, path) = Fixture::default().written();
    let message = verify_default(&path).unwrap_err().to_string();
    assert!(message.contains("is corrupt: its blake3 is") && message.contains(DEFAULT_BLAKE3), "{message}");
    assert!(message.contains("make setup-model"), "{message}");
}

#[test]
fn specs_parse_options_and_refuse_typos() {
    let spec = LocalSpec::parse(
        "models/x.gguf?choose=admissible&temperature=0.7&top_p=0.9&max_tokens=64&context=1024&sessions=2&weights=q8",
    )
    .unwrap();
    assert_eq!(spec.path, PathBuf::from("models/x.gguf"));
    assert!(!spec.is_default);
    assert_eq!(spec.choose, Choose::Admissible);
    assert_eq!(spec.sampling, Sampling { temperature: 0.7, top_p: 0.9, max_tokens: 64 });
    assert_eq!((spec.context, spec.sessions, spec.matrices), (Some(1024), 2, Matrices::Q8));
    let default = LocalSpec::parse("smollm2").unwrap();
    assert!(default.is_default && default.path.ends_with(DEFAULT_FILE));
    assert_eq!((default.choose, default.sampling.temperature), (Choose::Generate, 0.0));
    for (spec, expected) in [
        ("", "name a .gguf file"),
        ("llama3", "neither a known alias"),
        ("x.gguf?choose=best", "`choose` is `generate` or `admissible`"),
        ("x.gguf?top_p=0", "`top_p` must be in (0, 1]"),
        ("x.gguf?temperature=-1", "`temperature` must be"),
        ("x.gguf?tempreature=1", "unknown option `tempreature`"),
        ("x.gguf?weights=f16", "`weights` is"),
        ("x.gguf?context", "not key=value"),
    ] {
        let message = LocalSpec::parse(spec).unwrap_err().to_string();
        assert!(message.contains(expected), "{spec}: {message}");
    }
}

fn house_tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec::new(
            "act",
            "Do one thing.",
            json!({"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}),
        ),
        ToolSpec::new("admissible", "List the commands.", json!({"type": "object", "properties": {}})),
    ]
}

fn listed(content: &str) -> ModelRequest {
    let call = ToolCall { id: "l1".into(), name: "admissible".into(), arguments: "{}".into() };
    ModelRequest {
        system: "Solve it.".into(),
        messages: vec![
            Message::user("Goal: open the box."),
            Message::assistant("", vec![call]),
            Message::tool("l1", content),
        ],
        tools: house_tools(),
        ..Default::default()
    }
}

#[test]
fn choosing_by_likelihood_lists_first_then_picks_a_listed_command() {
    let (_dir, local) = Fixture::default().open("?choose=admissible");
    assert!(local.describe().contains("choose=admissible"));
    let first = ModelRequest {
        messages: vec![Message::user("Goal: open the box.")],
        tools: house_tools(),
        ..Default::default()
    };
    let response = local.answer(&first).unwrap();
    assert_eq!(
        (response.calls.len(), response.calls[0].name.as_str(), response.calls[0].arguments.as_str()),
        (1, "admissible", "{}")
    );
    assert_eq!(raw(&response)["mode"], "list");

    let commands = ["open box 1", "look", "go to shelf 2", "take key 1 from box 1"];
    let request = listed(&format!("Admissible commands:\n{}\n", commands.join("\n")));
    let response = local.answer(&request).unwrap();
    let record = raw(&response);
    assert_eq!(record["mode"], "admissible");
    assert_eq!(record["candidates"], 4);
    let chosen = record["chosen"].as_str().unwrap();
    assert!(commands.contains(&chosen));
    assert_eq!(record["top"][0][0], chosen, "greedy takes the best score");
    assert_eq!(response.calls.len(), 1);
    assert_eq!(response.calls[0].name, "act");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&response.calls[0].arguments).unwrap(),
        json!({"command": chosen})
    );
    assert_eq!(local.answer(&request).unwrap(), response, "deterministic");
    assert!(response.usage.input_tokens > 0 && response.usage.output_tokens > 0);

    // Batched branch scoring agrees with feeding every candidate token by
    // token. With weights as stored, one row and many rows go through the
    // same quantized head, so the two may differ only by rounding.
    let (_dir, stored) = Fixture::default().open("?choose=admissible&weights=file");
    let mut engine = stored.engine().lock().unwrap();
    let prompt = engine.prompt(&turns_of(&text_actions::lower_request(&request))).unwrap();
    let end = engine.vocab.end_of_turn;
    let continuations: Vec<Vec<u32>> = commands
        .iter()
        .map(|c| {
            let mut t = engine.encode(&action_line("act", "command", c)).unwrap();
            t.push(end);
            t
        })
        .collect();
    let scores = engine.score(&prompt, &continuations).unwrap();
    let reference = engine.score_one_token_at_a_time(&prompt, &continuations);
    for (batched, single) in scores.iter().zip(&reference) {
        assert!((batched - single).abs() < 1e-3, "batched {scores:?} vs one by one {reference:?}");
    }
}

#[test]
fn a_failed_listing_or_no_listing_tool_means_free_generation() {
    let (_dir, local) = Fixture::default().open("?choose=admissible&max_tokens=4");
    let response = local.answer(&listed("Error: the task is over; no more actions are accepted.")).unwrap();
    assert_eq!(raw(&response)["mode"], "generate");
    let mut no_lister = listed("Admissible commands:\nlook");
    no_lister.tools.retain(|t| t.name != "admissible");
    assert_eq!(raw(&local.answer(&no_lister).unwrap())["mode"], "generate");
}

#[test]
fn plans_follow_the_latest_tool_result() {
    let act = |id: &str| ToolCall { id: id.into(), name: "act".into(), arguments: r#"{"command": "look"}"#.into() };
    let mut request = listed("Admissible commands:\nlook\nlook\n\ngo to shelf 1");
    assert_eq!(
        plan(Choose::Admissible, &request),
        Plan::Choose {
            tool: "act".into(),
            field: "command".into(),
            commands: vec!["look".into(), "go to shelf 1".into()]
        }
    );
    assert_eq!(plan(Choose::Generate, &request), Plan::Generate);
    request.messages.push(Message::user("[advice from guard] think first"));
    assert!(matches!(plan(Choose::Admissible, &request), Plan::Choose { .. }), "advice does not stale the listing");
    request.messages.push(Message::assistant("", vec![act("a1")]));
    request.messages.push(Message::tool("a1", "You see a shelf."));
    assert_eq!(plan(Choose::Admissible, &request), Plan::List, "an action stales the listing");
    assert_eq!(parse_listing("no header\nlook"), None);
    assert_eq!(parse_listing("Admissible commands:\n\n"), None);
}

/// The real default model, when `make setup-model` has fetched it.
#[test]
fn the_default_model_answers_when_present() {
    let path = default_model_path();
    if !path.is_file() {
        eprintln!("skipped: {} is absent; run `make setup-model` to test the real model", path.display());
        return;
    }
    let local = Local::open("smollm2?max_tokens=24", None, None).unwrap();
    assert!(local.describe().starts_with("local:smollm2 (llama 30x576, window 8192"), "{}", local.describe());
    let request = ModelRequest {
        messages: vec![Message::user("What is the capital of France? Answer in one sentence.")],
        ..Default::default()
    };
    let response = local.answer(&request).unwrap();
    assert!(response.text.contains("Paris"), "{response:?}");
    assert_eq!(raw(&response)["finish"], "end_of_turn");
    let sampled = |seed| local.answer(&ModelRequest { temperature: Some(0.9), seed, ..request.clone() }).unwrap().text;
    assert_eq!(sampled(11), sampled(11));
}
