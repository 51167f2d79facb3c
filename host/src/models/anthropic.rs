//! The Anthropic messages API backend.
//!
//! `POST {base_url}/v1/messages` with `x-api-key` and
//! `anthropic-version: 2023-06-01`, non-streaming, with native tool use.
//! The neutral conversation maps onto the API like this:
//!
//! - The system prompt is the top-level `system` field. System-role messages
//!   inside the conversation have no place in the API, so they are appended
//!   to it, in order.
//! - An assistant message becomes a `text` block (if it has text) followed by
//!   one `tool_use` block per call. `input` must be a JSON object; arguments
//!   that are not one (a model's malformed JSON) are sent as
//!   `{"_raw_arguments": "<the text>"}` rather than dropped.
//! - A tool message becomes a `tool_result` block in a *user* message.
//!   Consecutive messages of the same API role are merged into one message,
//!   as the API requires for parallel tool results, with `tool_result`
//!   blocks first.
//! - The API rejects empty text blocks, so empty text is left out, and a
//!   message that would have no block at all says `(empty)`.
//! - `max_tokens` is required by the API: the request's value, else the
//!   config's, else [`DEFAULT_MAX_TOKENS`].
//!
//! Retries, timeouts and error wording live in [`super::http`]; the key is
//! handled as in [`super::openai`].

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{read_key, validate_base_url, HttpClient, HttpSettings, RefusalHints};
use super::{BoxFuture, Model, ModelError, ModelRequest, ModelResponse, Usage};
use crate::chat::{Message, Role, ToolCall};

/// The default base URL, Anthropic's own API (without `/v1`).
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The default environment variable holding the API key.
pub const DEFAULT_KEY_ENV: &str = "ANTHROPIC_API_KEY";
/// The API version sent in `anthropic-version`.
pub const API_VERSION: &str = "2023-06-01";
/// The reply length limit when neither the request nor the config sets one.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Where and how to reach the messages API.
#[derive(Clone, Debug, PartialEq)]
pub struct AnthropicConfig {
    /// The API root without `/v1`, e.g. `https://api.anthropic.com`.
    pub base_url: String,
    /// The model name, e.g. `claude-3-5-haiku-latest`.
    pub model: String,
    /// The environment variable that holds the API key.
    pub api_key_env: String,
    /// Default sampling temperature; a request's own value wins.
    pub temperature: Option<f32>,
    /// Default reply length limit; a request's own value wins.
    pub max_tokens: Option<u32>,
    /// Timeouts and retries.
    pub http: HttpSettings,
}

impl AnthropicConfig {
    /// A config for `model` on Anthropic's API with default key variable,
    /// sampling and HTTP settings.
    pub fn new(model: impl Into<String>) -> Self {
        AnthropicConfig {
            base_url: DEFAULT_BASE_URL.to_owned(),
            model: model.into(),
            api_key_env: DEFAULT_KEY_ENV.to_owned(),
            temperature: None,
            max_tokens: None,
            http: HttpSettings::default(),
        }
    }
}

/// A model behind the Anthropic messages API.
#[derive(Debug)]
pub struct Anthropic {
    config: AnthropicConfig,
    api_key: Option<SecretString>,
    http: HttpClient,
    url: String,
}

impl Anthropic {
    /// Build the backend, reading the key from `config.api_key_env` (absent
    /// or empty means no key; the server will then say 401 and the error
    /// names the variable).
    pub fn new(config: AnthropicConfig) -> Result<Self, ModelError> {
        let api_key = read_key(&config.api_key_env);
        Self::with_api_key(config, api_key)
    }

    /// Build the backend with an explicit key (or none), ignoring the
    /// environment.
    pub fn with_api_key(config: AnthropicConfig, api_key: Option<SecretString>) -> Result<Self, ModelError> {
        let base = validate_base_url(&config.base_url)?;
        if config.model.trim().is_empty() {
            return Err(ModelError::Config(format!("the model name for {base} is empty")));
        }
        let url = format!("{base}/v1/messages");
        let http = HttpClient::new(config.http.clone())?;
        Ok(Anthropic { config, api_key, http, url })
    }

    /// The JSON body sent for `request`.
    pub fn encode(&self, request: &ModelRequest) -> Value {
        let mut system_parts: Vec<&str> = Vec::new();
        if !request.system.is_empty() {
            system_parts.push(&request.system);
        }
        let mut messages: Vec<(&'static str, Vec<Value>)> = Vec::new();
        for message in &request.messages {
            let (role, blocks) = match message.role {
                Role::System => {
                    system_parts.push(&message.content);
                    continue;
                }
                Role::User => ("user", text_block(&message.content).into_iter().collect()),
                Role::Assistant => ("assistant", assistant_blocks(message)),
                Role::Tool => (
                    "user",
                    vec![json!({
                        "type": "tool_result",
                        "tool_use_id": message.call_id.clone().unwrap_or_default(),
                        "content": message.content,
                    })],
                ),
            };
            match messages.last_mut() {
                Some((last_role, last_blocks)) if *last_role == role => last_blocks.extend(blocks),
                _ => messages.push((role, blocks)),
            }
        }
        let messages: Vec<Value> = messages
            .into_iter()
            .map(|(role, mut blocks)| {
                // Stable: tool results first, everything else in its order.
                blocks.sort_by_key(|block| block["type"] != "tool_result");
                if blocks.is_empty() {
                    blocks.push(json!({"type": "text", "text": "(empty)"}));
                }
                json!({"role": role, "content": blocks})
            })
            .collect();
        let mut body = json!({
            "model": self.config.model,
            "max_tokens": request.max_tokens.or(self.config.max_tokens).unwrap_or(DEFAULT_MAX_TOKENS),
            "messages": messages,
        });
        let system = system_parts.join("\n\n");
        if !system.is_empty() {
            body["system"] = json!(system);
        }
        if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(
                    |tool| json!({"name": tool.name, "description": tool.description, "input_schema": tool.parameters}),
                )
                .collect();
        }
        if let Some(temperature) = request.temperature.or(self.config.temperature) {
            body["temperature"] = json!(temperature);
        }
        body
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static("anthropic-version"), HeaderValue::from_static(API_VERSION));
        if let Some(key) = &self.api_key {
            if let Ok(mut value) = HeaderValue::from_str(key.expose_secret()) {
                value.set_sensitive(true);
                headers.insert(HeaderName::from_static("x-api-key"), value);
            }
        }
        headers
    }

    fn hints(&self) -> RefusalHints {
        let env = &self.config.api_key_env;
        RefusalHints {
            unauthorized: Some(match self.api_key {
                Some(_) => {
                    format!("the key in {env} was rejected; check that it is valid for {}", self.config.base_url)
                }
                None => format!("set {env} to your API key"),
            }),
            not_found: Some(format!(
                "check the base URL ({}, without /v1) and the model name ({})",
                self.config.base_url, self.config.model
            )),
        }
    }
}

impl Model for Anthropic {
    fn describe(&self) -> String {
        format!("anthropic:{}@{}", self.config.model, self.config.base_url.trim_end_matches('/'))
    }

    fn complete<'a>(&'a self, request: &'a ModelRequest) -> BoxFuture<'a, Result<ModelResponse, ModelError>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&self.encode(request))
                .map_err(|e| ModelError::Config(format!("cannot serialize the request for {}: {e}", self.url)))?;
            let text = self.http.post_json(&self.url, &self.headers(), body, &self.hints()).await?;
            decode(&text).map_err(|reason| ModelError::Malformed { url: self.url.clone(), reason })
        })
    }
}

fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

fn assistant_blocks(message: &Message) -> Vec<Value> {
    let mut blocks: Vec<Value> = text_block(&message.content).into_iter().collect();
    blocks.extend(message.calls.iter().map(|call| {
        let input = match serde_json::from_str::<Value>(&call.arguments) {
            Ok(object @ Value::Object(_)) => object,
            _ if call.arguments.trim().is_empty() => json!({}),
            _ => json!({"_raw_arguments": call.arguments}),
        };
        json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input})
    }));
    blocks
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    content: Option<Vec<Block>>,
    #[serde(default)]
    usage: Option<ReplyUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum Block {
    #[serde(rename = "text")]
    Text { text: String },
    #[serde(rename = "tool_use")]
    ToolUse { id: String, name: String, input: Value },
    /// Thinking, citations and future block types carry nothing we use.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct ReplyUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

/// Parse a messages API reply. The error says what was wrong, with the JSON
/// path of the offending field.
pub fn decode(text: &str) -> Result<ModelResponse, String> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let reply: Reply = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_eof() || inner.is_syntax() {
            format!("the reply is not complete JSON ({inner})")
        } else {
            format!("at `{path}`: {inner}")
        }
    })?;
    let Some(content) = reply.content else {
        return Err(match reply.error {
            Some(error) => format!(
                "the reply has no `content`; the provider reported an error: {}",
                super::http::provider_message(&json!({"error": error}).to_string())
            ),
            None => "the reply has no `content` field".to_owned(),
        });
    };
    let mut reply_text = String::new();
    let mut calls = Vec::new();
    for block in content {
        match block {
            Block::Text { text } => reply_text.push_str(&text),
            Block::ToolUse { id, name, input } => calls.push(ToolCall { id, name, arguments: input.to_string() }),
            Block::Other => {}
        }
    }
    let usage = reply
        .usage
        .map(|u| Usage { input_tokens: u.input_tokens.unwrap_or(0), output_tokens: u.output_tokens.unwrap_or(0) })
        .unwrap_or_default();
    Ok(ModelResponse { text: reply_text, calls, usage, raw: Some(text.to_owned()) })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::chat::ToolSpec;
    use crate::models::http::loopback::{fast, refused_base, Server, Step};

    fn model_at(base: &str, max_attempts: u32, key: Option<&str>) -> Anthropic {
        let mut config = AnthropicConfig::new("claude-test");
        config.base_url = base.to_owned();
        config.http = fast(max_attempts);
        Anthropic::with_api_key(config, key.map(|k| SecretString::from(k.to_owned()))).unwrap()
    }

    fn hello() -> ModelRequest {
        ModelRequest { system: "Be brief.".into(), messages: vec![Message::user("hi")], ..Default::default() }
    }

    const PLAIN: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-test",
        "content":[{"type":"text","text":"Hello there."}],"stop_reason":"end_turn","stop_sequence":null,
        "usage":{"input_tokens":10,"output_tokens":4}}"#;

    #[tokio::test]
    async fn plain_text_answer() {
        let server = Server::start(vec![Step::json(200, PLAIN)]).await;
        let response = model_at(&server.base, 3, Some("sk-ant-test")).complete(&hello()).await.unwrap();
        assert_eq!(response.text, "Hello there.");
        assert!(response.calls.is_empty());
        assert_eq!(response.usage, Usage { input_tokens: 10, output_tokens: 4 });

        let sent = &server.requests()[0];
        assert!(sent.head.starts_with("POST /v1/messages HTTP/1.1"), "{}", sent.head);
        assert_eq!(sent.header("x-api-key").as_deref(), Some("sk-ant-test"));
        assert_eq!(sent.header("anthropic-version").as_deref(), Some("2023-06-01"));
        assert_eq!(
            sent.body,
            json!({
                "model": "claude-test",
                "max_tokens": DEFAULT_MAX_TOKENS,
                "system": "Be brief.",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            })
        );
    }

    #[tokio::test]
    async fn tool_use_round_trip() {
        let reply = r#"{"id":"msg_2","type":"message","role":"assistant","content":[
            {"type":"thinking","thinking":"hmm","signature":"x"},
            {"type":"text","text":"Let me look."},
            {"type":"tool_use","id":"toolu_1","name":"search","input":{"query":"rust"}},
            {"type":"tool_use","id":"toolu_2","name":"open","input":{}}],
            "stop_reason":"tool_use","usage":{"input_tokens":50,"output_tokens":30}}"#;
        let server = Server::start(vec![Step::json(200, reply)]).await;
        let calls = vec![
            ToolCall { id: "toolu_a".into(), name: "search".into(), arguments: r#"{"query":"wasm"}"#.into() },
            ToolCall { id: "toolu_b".into(), name: "open".into(), arguments: r#"{"path": "#.into() },
        ];
        let request = ModelRequest {
            system: "Use tools.".into(),
            messages: vec![
                Message::user("find things"),
                Message::assistant("Searching.", calls),
                Message::tool("toolu_a", "3 results"),
                Message::tool("toolu_b", "no such file"),
                Message::new(Role::System, "Budget: 2 steps left."),
                Message::user("go on"),
            ],
            tools: vec![ToolSpec::new("search", "Search the web.", json!({"type":"object"}))],
            temperature: Some(0.5),
            max_tokens: Some(100),
            seed: 3,
        };
        let response = model_at(&server.base, 1, Some("k")).complete(&request).await.unwrap();
        assert_eq!(response.text, "Let me look.");
        assert_eq!(
            response.calls,
            vec![
                ToolCall { id: "toolu_1".into(), name: "search".into(), arguments: r#"{"query":"rust"}"#.into() },
                ToolCall { id: "toolu_2".into(), name: "open".into(), arguments: "{}".into() },
            ]
        );
        assert_eq!(response.usage, Usage { input_tokens: 50, output_tokens: 30 });

        let body = &server.requests()[0].body;
        assert_eq!(body["system"], json!("Use tools.\n\nBudget: 2 steps left."));
        assert_eq!(body["max_tokens"], json!(100));
        assert_eq!(body["temperature"], json!(0.5));
        assert_eq!(
            body["tools"],
            json!([{"name": "search", "description": "Search the web.", "input_schema": {"type":"object"}}])
        );
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "find things"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Searching."},
                    {"type": "tool_use", "id": "toolu_a", "name": "search", "input": {"query": "wasm"}},
                    {"type": "tool_use", "id": "toolu_b", "name": "open", "input": {"_raw_arguments": "{\"path\": "}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_a", "content": "3 results"},
                    {"type": "tool_result", "tool_use_id": "toolu_b", "content": "no such file"},
                    {"type": "text", "text": "go on"},
                ]},
            ])
        );
    }

    #[tokio::test]
    async fn bad_request_is_refused_with_the_provider_message_and_not_retried() {
        let error =
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"messages: roles must alternate"}}"#;
        let server = Server::start(vec![Step::json(400, error)]).await;
        let err = model_at(&server.base, 4, Some("k")).complete(&hello()).await.unwrap_err();
        match &err {
            ModelError::Refused { status: 400, body, url } => {
                assert!(body.contains("roles must alternate"), "{body}");
                assert_eq!(url, &format!("{}/v1/messages", server.base));
            }
            other => panic!("expected Refused, got {other:?}"),
        }
        assert_eq!(server.count(), 1);
    }

    #[tokio::test]
    async fn unauthorized_names_the_key_variable() {
        let error = r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
        let server = Server::start(vec![Step::json(401, error)]).await;
        let err = model_at(&server.base, 3, None).complete(&hello()).await.unwrap_err();
        assert!(err.to_string().contains("set ANTHROPIC_API_KEY"), "{err}");
        assert_eq!(server.requests()[0].header("x-api-key"), None);
    }

    #[tokio::test]
    async fn overloaded_with_retry_after_then_success() {
        let overloaded = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let server = Server::start(vec![
            Step::with_headers(529, &[("retry-after", "0")], overloaded),
            Step::with_headers(429, &[("retry-after", "0")], overloaded),
            Step::json(200, PLAIN),
        ])
        .await;
        let response = model_at(&server.base, 3, Some("k")).complete(&hello()).await.unwrap();
        assert_eq!(response.text, "Hello there.");
        assert_eq!(server.count(), 3);
    }

    #[tokio::test]
    async fn persistent_unavailability_gives_up_after_max_attempts() {
        let server = Server::start(vec![Step::json(503, "upstream connect error")]).await;
        let err = model_at(&server.base, 2, Some("k")).complete(&hello()).await.unwrap_err();
        assert!(matches!(err, ModelError::Unavailable { status: 503, attempts: 2, .. }), "{err:?}");
        assert_eq!(server.count(), 2);
    }

    #[tokio::test]
    async fn truncated_json_is_malformed() {
        let server = Server::start(vec![Step::json(200, &PLAIN[..80])]).await;
        let err = model_at(&server.base, 3, Some("k")).complete(&hello()).await.unwrap_err();
        assert!(
            matches!(&err, ModelError::Malformed { reason, .. } if reason.contains("not complete JSON")),
            "{err:?}"
        );
        assert_eq!(server.count(), 1);
    }

    #[test]
    fn malformed_replies_say_what_was_wrong() {
        let cases = [
            (r#"{"type":"message"}"#, "no `content` field"),
            (r#"{"content":{"type":"text"}}"#, "at `content`"),
            (r#"{"content":[{"type":"tool_use","id":"t","input":{}}]}"#, "missing field `name`"),
            (r#"{"content":[],"usage":{"input_tokens":-1}}"#, "usage.input_tokens"),
            (r#"{"type":"error","error":{"type":"api_error","message":"internal"}}"#, "internal"),
        ];
        for (reply, expected) in cases {
            let reason = decode(reply).expect_err(reply);
            assert!(reason.contains(expected), "{reply}: {reason}");
        }
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let server = Server::start(vec![Step::Hang]).await;
        let mut config = AnthropicConfig::new("claude-test");
        config.base_url = server.base.clone();
        config.http = fast(1);
        config.http.timeout = Duration::from_millis(300);
        let err = Anthropic::with_api_key(config, None).unwrap().complete(&hello()).await.unwrap_err();
        assert!(matches!(err, ModelError::Timeout { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn connection_refused_is_unreachable() {
        let base = refused_base().await;
        let err = model_at(&base, 1, None).complete(&hello()).await.unwrap_err();
        assert!(
            matches!(&err, ModelError::Unreachable { url, .. } if url == &format!("{base}/v1/messages")),
            "{err:?}"
        );
    }

    #[test]
    fn an_empty_user_message_still_has_a_block() {
        let model = model_at("http://127.0.0.1:9", 1, None);
        let body = model.encode(&ModelRequest { messages: vec![Message::user("")], ..Default::default() });
        assert_eq!(body["messages"], json!([{"role": "user", "content": [{"type": "text", "text": "(empty)"}]}]));
        assert_eq!(body.get("system"), None);
    }
}
