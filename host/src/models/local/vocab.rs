//! The model's own tokenizer, chat template and end-of-turn tokens, all read
//! from the GGUF metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`).
//!
//! The byte-pair vocabulary and merges go through candle's GGUF adapter into
//! the `tokenizers` crate. Its pre-tokenizer table is then corrected where it
//! departs from the model's own `tokenizer.json`: GPT-2-style files must not
//! prefix a space to every segment, and the `smollm` family (SmolLM2,
//! StarCoder) splits digits one by one. A `tokenizer.ggml.pre` outside the
//! known table is refused rather than tokenized subtly wrong.

use std::collections::BTreeSet;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{SplitDelimiterBehavior, Tokenizer};

use super::error::LocalError;
use super::gguf::{as_u64, GgufFile};

/// Pre-tokenizers (`tokenizer.ggml.pre`) this backend reproduces exactly.
pub const SUPPORTED_PRE: &[&str] =
    &["gpt2", "default", "smollm", "starcoder", "refact", "codeshell", "qwen2", "llama3", "llama-bpe", "smaug-bpe"];

/// GGUF token type of control tokens (`<|im_end|>`, `<|endoftext|>`, ...).
const TOKEN_TYPE_CONTROL: u64 = 3;

/// Llama 3's split pattern (GGUF pre `llama-bpe`).
const REGEX_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Text to tokens and back, plus the tokens that end a turn.
pub struct Vocab {
    tokenizer: Tokenizer,
    /// Generation stops at any of these: control tokens (end of turn, end of
    /// text, the start of a new turn) and the declared end-of-sequence ids.
    stop_tokens: BTreeSet<u32>,
    /// The beginning-of-sequence token, prepended when the file asks for it.
    bos: Option<u32>,
    add_bos: bool,
    /// The beginning and end tokens as text, for chat templates.
    pub bos_text: String,
    pub eos_text: String,
    /// The token that closes an assistant turn, for scoring continuations.
    pub end_of_turn: u32,
    /// The chat template from the file, if it has one.
    pub chat_template: Option<String>,
    pub size: usize,
}

impl Vocab {
    /// Read the tokenizer from `file`.
    pub fn from_gguf(file: &GgufFile) -> Result<Vocab, LocalError> {
        let unsupported = |what: String| LocalError::Unsupported {
            path: file.path.clone(),
            what,
            supported: format!("byte-pair (`gpt2`) tokenizers with pre-tokenizer {}", SUPPORTED_PRE.join(", ")),
        };
        let model = file
            .string("tokenizer.ggml.model")
            .ok_or_else(|| file.bad("metadata `tokenizer.ggml.model` is missing"))?;
        if model != "gpt2" {
            return Err(unsupported(format!("tokenizer `{model}`")));
        }
        let pre = file.string("tokenizer.ggml.pre").unwrap_or("gpt2").to_owned();
        if !SUPPORTED_PRE.contains(&pre.as_str()) {
            return Err(unsupported(format!("pre-tokenizer `{pre}`")));
        }
        let mut tokenizer =
            Tokenizer::from_gguf(&file.content).map_err(|e| file.bad(format!("its tokenizer does not load: {e}")))?;
        let fixed: Option<PreTokenizerWrapper> = match pre.as_str() {
            "gpt2" | "default" => Some(ByteLevel::new(false, true, true).into()),
            "smollm" | "starcoder" | "refact" | "codeshell" => {
                Some(Sequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()]).into())
            }
            "llama-bpe" => {
                let split =
                    Split::new(SplitPattern::Regex(REGEX_LLAMA3.to_owned()), SplitDelimiterBehavior::Isolated, false)
                        .map_err(|e| file.bad(format!("the llama-bpe split pattern does not compile: {e}")))?;
                Some(Sequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]).into())
            }
            // candle's table matches these already.
            _ => None,
        };
        if let Some(pre_tokenizer) = fixed {
            tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
        }
        // Candle's adapter adds BOS/EOS through a post-processor when the
        // file asks; the template and `encode` below decide that instead.
        tokenizer.with_post_processor(None::<tokenizers::PostProcessorWrapper>);

        let tokens = match file.metadata().get("tokenizer.ggml.tokens") {
            Some(Value::Array(tokens)) => tokens,
            _ => return Err(file.bad("metadata `tokenizer.ggml.tokens` is missing")),
        };
        let id = |key: &str| file.metadata().get(key).and_then(as_u64).map(|n| n as u32);
        let text_of = |id: u32| tokens.get(id as usize).and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
        let mut stop_tokens = BTreeSet::new();
        if let Some(Value::Array(types)) = file.metadata().get("tokenizer.ggml.token_type") {
            for (i, kind) in types.iter().enumerate() {
                if as_u64(kind) == Some(TOKEN_TYPE_CONTROL) {
                    stop_tokens.insert(i as u32);
                }
            }
        }
        for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            stop_tokens.extend(id(key));
        }
        let eos = id("tokenizer.ggml.eos_token_id");
        let end_of_turn = id("tokenizer.ggml.eot_token_id")
            .or_else(|| {
                ["<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"].iter().find_map(|t| tokenizer.token_to_id(t))
            })
            .or(eos)
            .ok_or_else(|| file.bad("it names no end-of-turn or end-of-sequence token"))?;
        stop_tokens.insert(end_of_turn);
        let bos = id("tokenizer.ggml.bos_token_id");
        let add_bos = match file.metadata().get("tokenizer.ggml.add_bos_token") {
            Some(Value::Bool(b)) => *b,
            _ => false,
        };
        Ok(Vocab {
            size: tokens.len(),
            bos_text: bos.map(text_of).unwrap_or_default(),
            eos_text: eos.map(text_of).unwrap_or_default(),
            tokenizer,
            stop_tokens,
            bos,
            add_bos,
            end_of_turn,
            chat_template: file.string("tokenizer.chat_template").map(str::to_owned),
        })
    }

    /// Tokenize `text`, special tokens written as text (`<|im_start|>`)
    /// included, and prepend BOS when the file asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        let encoding = self.tokenizer.encode(text, false).map_err(|e| e.to_string())?;
        let mut ids = encoding.get_ids().to_vec();
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// The text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String, String> {
        self.tokenizer.decode(ids, false).map_err(|e| e.to_string())
    }

    /// Whether `token` ends the model's turn.
    pub fn is_stop(&self, token: u32) -> bool {
        self.stop_tokens.contains(&token)
    }
}
