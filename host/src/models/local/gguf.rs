//! Opening a GGUF file and reading what the transformer needs from it.
//!
//! Every check that can fail on a bad file runs here, before any weight is
//! loaded, so the error names the file and the exact problem: a missing file,
//! bytes that are not GGUF, a header that does not parse, tensors that run
//! past the end of a truncated download, an architecture or a feature
//! (rope scaling, a tokenizer family) the backend cannot run, and metadata
//! that contradicts the tensor shapes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;

use super::error::LocalError;

/// The architectures [`super::llama::Llama`] runs.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama"];

/// An opened, header-checked GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    reader: BufReader<File>,
    /// Whether this is the default model (errors then name `make setup-model`).
    pub is_default: bool,
}

/// The shape of a llama-family transformer, from the file's metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Hyper {
    pub architecture: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub n_ff: usize,
    pub head_dim: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
    /// The window the model was trained for.
    pub context_length: usize,
    pub vocab_size: usize,
}

impl GgufFile {
    /// Open `path` and check its header and tensor extents.
    pub fn open(path: &Path, is_default: bool) -> Result<GgufFile, LocalError> {
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LocalError::Missing {
                path: path.to_owned(),
                hint: if is_default {
                    format!("; run `{}` to fetch the default model", super::error::SETUP_COMMAND)
                } else {
                    String::new()
                },
            },
            _ => LocalError::Unreadable { path: path.to_owned(), reason: e.to_string() },
        })?;
        let file_len =
            file.metadata().map_err(|e| LocalError::Unreadable { path: path.to_owned(), reason: e.to_string() })?.len();
        let mut reader = BufReader::new(file);
        let mut magic = [0u8; 4];
        if let Err(e) = reader.read_exact(&mut magic) {
            return Err(LocalError::NotGguf {
                path: path.to_owned(),
                reason: format!("it is only {file_len} bytes long ({e})"),
            });
        }
        if &magic != b"GGUF" {
            return Err(LocalError::NotGguf {
                path: path.to_owned(),
                reason: format!("it starts with the bytes {magic:02x?}, not `GGUF`"),
            });
        }
        reader.rewind().map_err(|e| LocalError::Unreadable { path: path.to_owned(), reason: e.to_string() })?;
        let content = Content::read(&mut reader)
            .map_err(|e| LocalError::corrupt(path, format!("its header does not parse: {e}"), is_default))?;
        for (name, info) in &content.tensor_infos {
            let elems = info.shape.elem_count();
            let block = info.ggml_dtype.block_size();
            if elems % block != 0 {
                return Err(LocalError::corrupt(
                    path,
                    format!("tensor `{name}` has {elems} elements, not a multiple of its block size {block}"),
                    is_default,
                ));
            }
            let bytes = (elems / block * info.ggml_dtype.type_size()) as u64;
            let end = content.tensor_data_offset.saturating_add(info.offset).saturating_add(bytes);
            if end > file_len {
                return Err(LocalError::corrupt(
                    path,
                    format!(
                        "it is truncated: tensor `{name}` ends at byte {end} but the file has only {file_len} bytes"
                    ),
                    is_default,
                ));
            }
        }
        Ok(GgufFile { path: path.to_owned(), content, reader, is_default })
    }

    /// The metadata table.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// A metadata string, if present.
    pub fn string(&self, key: &str) -> Option<&str> {
        self.content.metadata.get(key).and_then(|v| v.to_string().ok()).map(String::as_str)
    }

    /// A required unsigned metadata number.
    pub fn usize(&self, key: &str) -> Result<usize, LocalError> {
        match self.content.metadata.get(key) {
            Some(value) => as_u64(value)
                .map(|n| n as usize)
                .ok_or_else(|| self.bad(format!("metadata `{key}` is {value:?}, not a whole number"))),
            None => Err(self.bad(format!("metadata `{key}` is missing"))),
        }
    }

    /// An optional float metadata value.
    pub fn f32_or(&self, key: &str, default: f32) -> Result<f32, LocalError> {
        match self.content.metadata.get(key) {
            None => Ok(default),
            Some(Value::F32(v)) => Ok(*v),
            Some(Value::F64(v)) => Ok(*v as f32),
            Some(value) => Err(self.bad(format!("metadata `{key}` is {value:?}, not a number"))),
        }
    }

    /// A [`LocalError::Corrupt`] about this file.
    pub fn bad(&self, reason: impl Into<String>) -> LocalError {
        LocalError::corrupt(&self.path, reason, self.is_default)
    }

    /// Whether the file has a tensor called `name`.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Read tensor `name` and check its shape (candle order: outer first).
    pub fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<QTensor, LocalError> {
        let Some(info) = self.content.tensor_infos.get(name) else {
            return Err(self.bad(format!("tensor `{name}` is missing")));
        };
        if info.shape.dims() != shape {
            return Err(self
                .bad(format!("tensor `{name}` has shape {:?} but the metadata implies {shape:?}", info.shape.dims())));
        }
        let tensor = info
            .read(&mut self.reader, self.content.tensor_data_offset, &Device::Cpu)
            .map_err(|e| self.bad(format!("tensor `{name}` cannot be read: {e}")))?;
        Ok(tensor)
    }

    /// The transformer's shape, refusing what [`super::llama::Llama`] cannot run.
    pub fn hyper(&self) -> Result<Hyper, LocalError> {
        let unsupported = |what: String| LocalError::Unsupported {
            path: self.path.clone(),
            what,
            supported: format!("architectures: {}", SUPPORTED_ARCHITECTURES.join(", ")),
        };
        let architecture = self
            .string("general.architecture")
            .ok_or_else(|| self.bad("metadata `general.architecture` is missing"))?
            .to_owned();
        if !SUPPORTED_ARCHITECTURES.contains(&architecture.as_str()) {
            return Err(unsupported(format!("architecture `{architecture}`")));
        }
        let key = |k: &str| format!("{architecture}.{k}");
        if let Some(scaling) = self.string(&key("rope.scaling.type")).filter(|s| *s != "none") {
            return Err(unsupported(format!("rope scaling `{scaling}`")));
        }
        if self.has_tensor("rope_freqs.weight") {
            return Err(unsupported("per-frequency rope factors (tensor `rope_freqs.weight`)".to_owned()));
        }
        if self.content.metadata.contains_key(&key("expert_count")) {
            return Err(unsupported("a mixture of experts".to_owned()));
        }
        let n_embd = self.usize(&key("embedding_length"))?;
        let n_head = self.usize(&key("attention.head_count"))?;
        let n_kv_head = match self.content.metadata.get(&key("attention.head_count_kv")) {
            Some(_) => self.usize(&key("attention.head_count_kv"))?,
            None => n_head,
        };
        if n_head == 0 || n_kv_head == 0 || n_embd % n_head != 0 || n_head % n_kv_head != 0 {
            return Err(self.bad(format!(
                "{n_head} attention heads, {n_kv_head} key/value heads and width {n_embd} do not divide evenly"
            )));
        }
        let head_dim = n_embd / n_head;
        if let Some(rope_dim) = self.content.metadata.get(&key("rope.dimension_count")).and_then(as_u64) {
            if rope_dim as usize != head_dim {
                return Err(unsupported(format!("partial rotary embeddings ({rope_dim} of {head_dim} dimensions)")));
            }
        }
        let vocab_size = match self.content.tensor_infos.get("token_embd.weight") {
            Some(info) => info.shape.dims()[0],
            None => return Err(self.bad("tensor `token_embd.weight` is missing")),
        };
        Ok(Hyper {
            n_layer: self.usize(&key("block_count"))?,
            n_embd,
            n_head,
            n_kv_head,
            n_ff: self.usize(&key("feed_forward_length"))?,
            head_dim,
            rope_base: self.f32_or(&key("rope.freq_base"), 10_000.0)?,
            rms_eps: self.f32_or(&key("attention.layer_norm_rms_epsilon"), 1e-5)?,
            context_length: self.usize(&key("context_length"))?,
            vocab_size,
            architecture,
        })
    }
}

/// Any integer metadata value as `u64` (negative values are refused).
pub fn as_u64(value: &Value) -> Option<u64> {
    match *value {
        Value::U8(v) => Some(v.into()),
        Value::U16(v) => Some(v.into()),
        Value::U32(v) => Some(v.into()),
        Value::U64(v) => Some(v),
        Value::I8(v) => u64::try_from(v).ok(),
        Value::I16(v) => u64::try_from(v).ok(),
        Value::I32(v) => u64::try_from(v).ok(),
        Value::I64(v) => u64::try_from(v).ok(),
        _ => None,
    }
}
