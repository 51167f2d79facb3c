//! Choosing a model at run time: one-line specs and a full config.
//!
//! A **spec** is the short form for command lines and quick manifests:
//!
//! | spec                         | backend                                   | key from            |
//! |------------------------------|-------------------------------------------|---------------------|
//! | `openai:MODEL@BASE_URL`      | OpenAI-compatible chat completions        | `OPENAI_API_KEY`    |
//! | `openai:MODEL`               | the same, at `https://api.openai.com/v1`  | `OPENAI_API_KEY`    |
//! | `anthropic:MODEL[@BASE_URL]` | Anthropic messages API                    | `ANTHROPIC_API_KEY` |
//! | `sim:REST`                   | the simulated model, `REST` is its spec   | —                   |
//! | `local:PATH_OR_ALIAS[?OPTS]` | a GGUF file run in-process ([`super::local`]) | —               |
//!
//! The model name ends at the first `@`, so `openai:llama3@http://localhost:11434/v1`
//! means model `llama3` on a local Ollama. A missing key is fine for local
//! servers; a server that wants one answers 401 and the error names the
//! variable.
//!
//! Everything else (another key variable, sampling defaults, timeouts,
//! retries, text-format tool calling, a response cache) is set in a
//! [`ModelConfig`], the serde form a manifest embeds. [`parse_config`] turns a
//! spec into the equivalent config, so the two never disagree.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::anthropic::{self, Anthropic, AnthropicConfig};
use super::cache::{Cached, ResponseCache};
use super::http::{HttpSettings, RetryPolicy};
use super::openai::{self, OpenAi, OpenAiConfig};
use super::text_actions::TextActions;
use super::{Model, ModelError};

const SPEC_FORMS: &str = "openai:MODEL@BASE_URL, anthropic:MODEL[@BASE_URL], sim:SPEC or local:PATH_OR_ALIAS";

/// Build the model a spec names (see the module docs for the forms).
pub fn parse(spec: &str) -> Result<Box<dyn Model>, ModelError> {
    parse_config(spec)?.build()
}

/// The [`ModelConfig`] a spec stands for, without building anything.
pub fn parse_config(spec: &str) -> Result<ModelConfig, ModelError> {
    let bad = |what: &str| ModelError::Config(format!("model spec `{spec}`: {what}; expected {SPEC_FORMS}"));
    let (backend, rest) = spec.trim().split_once(':').ok_or_else(|| bad("no backend before `:`"))?;
    let backend = match backend {
        "openai" => Backend::OpenAi,
        "anthropic" => Backend::Anthropic,
        "sim" => return Ok(ModelConfig::new(Backend::Sim, rest)),
        "local" => return Ok(ModelConfig::new(Backend::Local, rest)),
        other => return Err(bad(&format!("unknown backend `{other}`"))),
    };
    let (model, base_url) = match rest.split_once('@') {
        Some((model, base)) if base.trim().is_empty() => return Err(bad(&format!("nothing after `@` in `{model}@`"))),
        Some((model, base)) => (model, Some(base.trim().to_owned())),
        None => (rest, None),
    };
    if model.trim().is_empty() {
        return Err(bad("the model name is empty"));
    }
    Ok(ModelConfig { base_url, ..ModelConfig::new(backend, model.trim()) })
}

/// Which API a [`ModelConfig`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backend {
    /// An OpenAI-compatible chat completions endpoint.
    #[serde(rename = "openai")]
    OpenAi,
    /// The Anthropic messages API.
    #[serde(rename = "anthropic")]
    Anthropic,
    /// The deterministic simulated model; `model` is its spec.
    #[serde(rename = "sim")]
    Sim,
    /// A GGUF model run in-process; `model` is its `local:` spec.
    #[serde(rename = "local")]
    Local,
}

/// How tools reach the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolMode {
    /// The API's own tool calling.
    #[default]
    Native,
    /// The text action format of [`super::text_actions`], for models
    /// without tool calling.
    Text,
}

/// A model backend as a manifest describes it. Unset fields take the
/// backend's defaults; unknown fields are an error, so a typo is caught.
///
/// ```toml
/// backend = "openai"
/// model = "qwen2.5-7b-instruct"
/// base_url = "http://localhost:8000/v1"
/// api_key_env = "VLLM_API_KEY"
/// temperature = 0.2
/// tools = "text"
/// cache_dir = ".kiln/cache/models"
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Which API to talk to.
    pub backend: Backend,
    /// The model name the server knows (for `sim`: the sim spec).
    pub model: String,
    /// The endpoint; defaults to the provider's public API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The environment variable holding the API key; defaults to
    /// `OPENAI_API_KEY` / `ANTHROPIC_API_KEY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Default sampling temperature; a request's own value wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Default reply length limit; a request's own value wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Seconds for a whole request (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
    /// Seconds to establish a connection (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_secs: Option<f64>,
    /// Attempts per request, the first included (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// `native` (default) or `text`.
    #[serde(default)]
    pub tools: ToolMode,
    /// Cache answers under this directory (off when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
}

impl ModelConfig {
    /// A config with every optional field unset.
    pub fn new(backend: Backend, model: impl Into<String>) -> Self {
        ModelConfig {
            backend,
            model: model.into(),
            base_url: None,
            api_key_env: None,
            temperature: None,
            max_tokens: None,
            timeout_secs: None,
            connect_timeout_secs: None,
            max_attempts: None,
            tools: ToolMode::Native,
            cache_dir: None,
        }
    }

    /// Build the model: the backend, wrapped in [`TextActions`] when `tools =
    /// "text"`, wrapped in [`Cached`] when `cache_dir` is set.
    pub fn build(&self) -> Result<Box<dyn Model>, ModelError> {
        let http = self.http_settings()?;
        let base: Box<dyn Model> = match self.backend {
            Backend::OpenAi => {
                let mut config = OpenAiConfig::new(
                    self.model.clone(),
                    self.base_url.clone().unwrap_or_else(|| openai::DEFAULT_BASE_URL.to_owned()),
                );
                config.api_key_env = self.api_key_env.clone().unwrap_or_else(|| openai::DEFAULT_KEY_ENV.to_owned());
                config.temperature = self.temperature;
                config.max_tokens = self.max_tokens;
                config.http = http;
                Box::new(OpenAi::new(config)?)
            }
            Backend::Anthropic => {
                let mut config = AnthropicConfig::new(self.model.clone());
                if let Some(base) = &self.base_url {
                    config.base_url = base.clone();
                }
                config.api_key_env = self.api_key_env.clone().unwrap_or_else(|| anthropic::DEFAULT_KEY_ENV.to_owned());
                config.temperature = self.temperature;
                config.max_tokens = self.max_tokens;
                config.http = http;
                Box::new(Anthropic::new(config)?)
            }
            Backend::Sim => {
                for (field, set) in [("base_url", self.base_url.is_some()), ("api_key_env", self.api_key_env.is_some())]
                {
                    if set {
                        return Err(ModelError::Config(format!(
                            "`{field}` has no meaning for the sim backend; remove it"
                        )));
                    }
                }
                build_sim(&self.model)?
            }
            Backend::Local => {
                for (field, set) in [("base_url", self.base_url.is_some()), ("api_key_env", self.api_key_env.is_some())]
                {
                    if set {
                        return Err(ModelError::Config(format!(
                            "`{field}` has no meaning for the local backend; remove it"
                        )));
                    }
                }
                build_local(&self.model, self.temperature, self.max_tokens)?
            }
        };
        let model = match self.tools {
            ToolMode::Native => base,
            ToolMode::Text => Box::new(TextActions::new(base)),
        };
        match &self.cache_dir {
            None => Ok(model),
            Some(dir) => {
                let fingerprint = self.fingerprint(model.as_ref());
                Ok(Box::new(Cached::with_fingerprint(model, ResponseCache::open(dir)?, fingerprint)))
            }
        }
    }

    /// What, besides the request, shapes the answers: the backend's
    /// description plus the settings it does not show. Timeouts, retries
    /// and the cache directory are left out: they do not change answers.
    fn fingerprint(&self, model: &dyn Model) -> String {
        format!(
            "{} temperature={:?} max_tokens={:?} tools={:?}",
            model.describe(),
            self.temperature,
            self.max_tokens,
            self.tools
        )
    }

    fn http_settings(&self) -> Result<HttpSettings, ModelError> {
        let defaults = HttpSettings::default();
        let seconds = |field: &str, value: Option<f64>, default: Duration| match value {
            None => Ok(default),
            Some(secs) if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 => Ok(Duration::from_secs_f64(secs)),
            Some(secs) => Err(ModelError::Config(format!(
                "`{field}` must be a number of seconds above 0 and at most 86400, not {secs}"
            ))),
        };
        let max_attempts = match self.max_attempts {
            Some(0) => return Err(ModelError::Config("`max_attempts` must be at least 1".to_owned())),
            Some(n) => n,
            None => defaults.retry.max_attempts,
        };
        Ok(HttpSettings {
            timeout: seconds("timeout_secs", self.timeout_secs, defaults.timeout)?,
            connect_timeout: seconds("connect_timeout_secs", self.connect_timeout_secs, defaults.connect_timeout)?,
            retry: RetryPolicy { max_attempts, ..defaults.retry },
        })
    }
}

/// The `sim` arm, kept in one place: the simulated model lives in
/// [`super::sim`].
fn build_sim(spec: &str) -> Result<Box<dyn Model>, ModelError> {
    Ok(Box::new(super::sim::Sim::from_spec(spec)?))
}

/// The `local` arm: the GGUF backend lives in [`super::local`]. It loads the
/// weights now, so a missing or corrupt file fails before any task starts.
fn build_local(spec: &str, temperature: Option<f32>, max_tokens: Option<u32>) -> Result<Box<dyn Model>, ModelError> {
    Ok(Box::new(super::local::Local::open(spec, temperature, max_tokens)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Message;
    use crate::models::http::loopback::{Server, Step};
    use crate::models::ModelRequest;

    #[test]
    fn openai_specs() {
        let config = parse_config("openai:llama3@http://localhost:11434/v1").unwrap();
        assert_eq!(config.backend, Backend::OpenAi);
        assert_eq!(config.model, "llama3");
        assert_eq!(config.base_url.as_deref(), Some("http://localhost:11434/v1"));
        let model = config.build().unwrap();
        assert_eq!(model.describe(), "openai:llama3@http://localhost:11434/v1");
        assert_eq!(parse("openai:gpt-4o-mini").unwrap().describe(), "openai:gpt-4o-mini@https://api.openai.com/v1");
    }

    #[test]
    fn anthropic_specs() {
        assert_eq!(
            parse("anthropic:claude-3-5-haiku-latest").unwrap().describe(),
            "anthropic:claude-3-5-haiku-latest@https://api.anthropic.com"
        );
        assert_eq!(parse("anthropic:c@http://127.0.0.1:9/").unwrap().describe(), "anthropic:c@http://127.0.0.1:9");
    }

    #[test]
    fn sim_specs_delegate_to_the_simulator() {
        let config = parse_config("sim:weak?loop_rate=0.5").unwrap();
        assert_eq!((config.backend, config.model.as_str()), (Backend::Sim, "weak?loop_rate=0.5"));
        let direct = super::super::sim::Sim::from_spec("weak?loop_rate=0.5").unwrap();
        assert_eq!(parse("sim:weak?loop_rate=0.5").unwrap().describe(), direct.describe());
        assert!(parse("sim:no-such-profile").is_err(), "the simulator's own spec errors come through");

        let mut config = ModelConfig::new(Backend::Sim, "strong");
        config.base_url = Some("http://x".into());
        let message = config.build().err().unwrap().to_string();
        assert!(message.contains("`base_url` has no meaning for the sim backend"), "{message}");
    }

    #[test]
    fn bad_specs_say_what_is_wrong_and_what_is_expected() {
        let cases = [
            ("gpt-4o", "no backend"),
            ("gemini:pro", "unknown backend `gemini`"),
            ("openai:", "model name is empty"),
            ("openai:@http://x", "model name is empty"),
            ("openai:m@", "nothing after `@`"),
        ];
        for (spec, expected) in cases {
            let message = parse(spec).err().expect(spec).to_string();
            assert!(message.contains(expected) && message.contains("openai:MODEL@BASE_URL"), "{spec}: {message}");
        }
        let message = parse("openai:m@localhost:8000/v1").err().unwrap().to_string();
        assert!(message.contains("localhost:8000/v1"), "{message}");
    }

    #[test]
    fn config_deserializes_with_defaults_and_rejects_typos() {
        let config: ModelConfig = serde_json::from_value(serde_json::json!({
            "backend": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1",
            "temperature": 0.2, "tools": "text", "max_attempts": 2, "timeout_secs": 1.5
        }))
        .unwrap();
        assert_eq!(config.tools, ToolMode::Text);
        assert_eq!(config.max_attempts, Some(2));
        assert_eq!(config.cache_dir, None);
        let http = config.http_settings().unwrap();
        assert_eq!(http.timeout, Duration::from_millis(1500));
        assert_eq!(http.retry.max_attempts, 2);
        assert_eq!(config.build().unwrap().describe(), "openai:m@http://127.0.0.1:1/v1 (text actions)");

        let typo = serde_json::from_value::<ModelConfig>(
            serde_json::json!({"backend": "openai", "model": "m", "temprature": 1}),
        );
        assert!(typo.unwrap_err().to_string().contains("temprature"));
        let backend = serde_json::from_value::<ModelConfig>(serde_json::json!({"backend": "gemini", "model": "m"}));
        assert!(backend.unwrap_err().to_string().contains("gemini"));
    }

    #[test]
    fn invalid_numbers_are_config_errors() {
        let mut config = ModelConfig::new(Backend::OpenAi, "m");
        config.timeout_secs = Some(-1.0);
        assert!(config.build().err().unwrap().to_string().contains("timeout_secs"));
        config.timeout_secs = None;
        config.max_attempts = Some(0);
        assert!(config.build().err().unwrap().to_string().contains("max_attempts"));
    }

    #[tokio::test]
    async fn a_config_with_a_cache_dir_serves_repeats_from_disk() {
        let server = Server::start(vec![Step::json(200, r#"{"choices":[{"message":{"content":"hi"}}]}"#)]).await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = parse_config(&format!("openai:m@{}/v1", server.base)).unwrap();
        config.cache_dir = Some(dir.path().to_owned());
        let model = config.build().unwrap();
        let request = ModelRequest { messages: vec![Message::user("hello")], ..Default::default() };
        model.complete(&request).await.unwrap();
        model.complete(&request).await.unwrap();
        assert_eq!(server.count(), 1);

        config.temperature = Some(0.9);
        config.build().unwrap().complete(&request).await.unwrap();
        assert_eq!(server.count(), 2, "another default temperature is another cache key");
    }

    #[test]
    fn local_specs_name_a_gguf_file() {
        let config = parse_config("local:smollm2?choose=admissible").unwrap();
        assert_eq!((config.backend, config.model.as_str()), (Backend::Local, "smollm2?choose=admissible"));
        let message = parse("local:/no/such/model.gguf").err().unwrap().to_string();
        assert!(message.contains("/no/such/model.gguf does not exist"), "{message}");
        let message = parse("local:llama3").err().unwrap().to_string();
        assert!(message.contains("neither a known alias"), "{message}");
        let mut config = ModelConfig::new(Backend::Local, "smollm2");
        config.base_url = Some("http://x".into());
        let message = config.build().err().unwrap().to_string();
        assert!(message.contains("`base_url` has no meaning for the local backend"), "{message}");
    }
}
