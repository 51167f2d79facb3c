//! The OpenAI-compatible chat completions backend.
//!
//! `POST {base_url}/chat/completions`, non-streaming, with native tool
//! calling. vLLM, SGLang, llama.cpp's server, Ollama and most hosted
//! providers speak this dialect, so the encoder sticks to the common core
//! and the decoder is lenient where servers are known to differ:
//!
//! - `tool_calls[].function.arguments` is a JSON *string* in the spec; a few
//!   servers send an object, which is re-serialized.
//! - A tool call without an `id` gets a deterministic one (`call_<index>`).
//! - `content` may be `null`, a string, or an array of text parts.
//! - A missing `usage` counts as zero tokens.
//!
//! Anything else that does not fit — truncated JSON, no `choices`, a field of
//! the wrong type — is [`ModelError::Malformed`] naming the JSON path at
//! fault. Retries, timeouts and error wording live in [`super::http`].
//!
//! The API key is read once from a named environment variable and held as a
//! [`SecretString`]: it is sent as a sensitive header and never printed. A
//! missing key is allowed (local servers need none); if the server then
//! answers 401, the error says which variable to set.

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{read_key, validate_base_url, HttpClient, HttpSettings, RefusalHints};
use super::{BoxFuture, Model, ModelError, ModelRequest, ModelResponse, Usage};
use crate::chat::{Message, Role, ToolCall};

/// The default base URL, OpenAI's own API.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The default environment variable holding the API key.
pub const DEFAULT_KEY_ENV: &str = "OPENAI_API_KEY";

/// Where and how to reach an OpenAI-compatible endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenAiConfig {
    /// Up to and including the version segment, e.g. `http://localhost:8000/v1`.
    /// A trailing `/` is ignored.
    pub base_url: String,
    /// The model name the server knows, e.g. `gpt-4o-mini`.
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

impl OpenAiConfig {
    /// A config for `model` at `base_url` with default key variable, sampling
    /// and HTTP settings.
    pub fn new(model: impl Into<String>, base_url: impl Into<String>) -> Self {
        OpenAiConfig {
            base_url: base_url.into(),
            model: model.into(),
            api_key_env: DEFAULT_KEY_ENV.to_owned(),
            temperature: None,
            max_tokens: None,
            http: HttpSettings::default(),
        }
    }
}

/// An OpenAI-compatible chat completions model.
#[derive(Debug)]
pub struct OpenAi {
    config: OpenAiConfig,
    api_key: Option<SecretString>,
    http: HttpClient,
    url: String,
}

impl OpenAi {
    /// Build the backend, reading the key from `config.api_key_env` (absent
    /// or empty means no key).
    pub fn new(config: OpenAiConfig) -> Result<Self, ModelError> {
        let api_key = read_key(&config.api_key_env);
        Self::with_api_key(config, api_key)
    }

    /// Build the backend with an explicit key (or none), ignoring the
    /// environment.
    pub fn with_api_key(config: OpenAiConfig, api_key: Option<SecretString>) -> Result<Self, ModelError> {
        let base = validate_base_url(&config.base_url)?;
        if config.model.trim().is_empty() {
            return Err(ModelError::Config(format!("the model name for {base} is empty")));
        }
        let url = format!("{base}/chat/completions");
        let http = HttpClient::new(config.http.clone())?;
        Ok(OpenAi { config, api_key, http, url })
    }

    /// The JSON body sent for `request`.
    pub fn encode(&self, request: &ModelRequest) -> Value {
        let mut messages = Vec::with_capacity(request.messages.len() + 1);
        if !request.system.is_empty() {
            messages.push(json!({"role": "system", "content": request.system}));
        }
        messages.extend(request.messages.iter().map(encode_message));
        let mut body = json!({
            "model": self.config.model,
            "messages": messages,
            "seed": request.seed,
        });
        if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(|tool| {
                    json!({"type": "function", "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    }})
                })
                .collect();
        }
        if let Some(temperature) = request.temperature.or(self.config.temperature) {
            body["temperature"] = json!(temperature);
        }
        if let Some(max_tokens) = request.max_tokens.or(self.config.max_tokens) {
            body["max_tokens"] = json!(max_tokens);
        }
        body
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(key) = &self.api_key {
            if let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret())) {
                value.set_sensitive(true);
                headers.insert(AUTHORIZATION, value);
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
                "check the base URL ({}) and the model name ({})",
                self.config.base_url, self.config.model
            )),
        }
    }
}

impl Model for OpenAi {
    fn describe(&self) -> String {
        format!("openai:{}@{}", self.config.model, self.config.base_url.trim_end_matches('/'))
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

fn encode_message(message: &Message) -> Value {
    match message.role {
        Role::System => json!({"role": "system", "content": message.content}),
        Role::User => json!({"role": "user", "content": message.content}),
        Role::Assistant if message.calls.is_empty() => json!({"role": "assistant", "content": message.content}),
        Role::Assistant => {
            let calls: Vec<Value> = message
                .calls
                .iter()
                .map(|call| {
                    json!({"id": call.id, "type": "function",
                           "function": {"name": call.name, "arguments": call.arguments}})
                })
                .collect();
            let content = if message.content.is_empty() { Value::Null } else { json!(message.content) };
            json!({"role": "assistant", "content": content, "tool_calls": calls})
        }
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": message.call_id.clone().unwrap_or_default(),
            "content": message.content,
        }),
    }
}

#[derive(Deserialize)]
struct Completion {
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<CompletionUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize)]
struct ContentPart {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Deserialize)]
struct CompletionUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

/// Parse a chat completion reply. The error says what was wrong, with the
/// JSON path of the offending field.
pub fn decode(text: &str) -> Result<ModelResponse, String> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let completion: Completion = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_eof() || inner.is_syntax() {
            format!("the reply is not complete JSON ({inner})")
        } else {
            format!("at `{path}`: {inner}")
        }
    })?;
    let Some(choices) = completion.choices else {
        return Err(match completion.error {
            Some(error) => format!(
                "the reply has no `choices`; the provider reported an error: {}",
                super::http::provider_message(&json!({"error": error}).to_string())
            ),
            None => "the reply has no `choices` field".to_owned(),
        });
    };
    let Some(first) = choices.into_iter().next() else {
        return Err("`choices` is empty".to_owned());
    };
    let reply_text = match first.message.content {
        None => String::new(),
        Some(Content::Text(content)) => content,
        Some(Content::Parts(parts)) => parts.into_iter().filter_map(|p| p.text).collect(),
    };
    let calls = first
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(index, call)| {
            let arguments = match call.function.arguments {
                None | Some(Value::Null) => "{}".to_owned(),
                Some(Value::String(raw)) => raw,
                Some(other) => other.to_string(),
            };
            ToolCall { id: call.id.unwrap_or_else(|| format!("call_{index}")), name: call.function.name, arguments }
        })
        .collect();
    let usage = completion
        .usage
        .map(|u| Usage { input_tokens: u.prompt_tokens.unwrap_or(0), output_tokens: u.completion_tokens.unwrap_or(0) })
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

    fn model_at(base: &str, max_attempts: u32, key: Option<&str>) -> OpenAi {
        let mut config = OpenAiConfig::new("test-model", format!("{base}/v1"));
        config.http = fast(max_attempts);
        config.temperature = Some(0.25);
        OpenAi::with_api_key(config, key.map(|k| SecretString::from(k.to_owned()))).unwrap()
    }

    fn hello() -> ModelRequest {
        ModelRequest { system: "Be brief.".into(), messages: vec![Message::user("hi")], seed: 7, ..Default::default() }
    }

    const PLAIN: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","model":"test-model",
        "choices":[{"index":0,"message":{"role":"assistant","content":"Hello there."},"finish_reason":"stop"}],
        "usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;

    #[tokio::test]
    async fn plain_text_answer() {
        let server = Server::start(vec![Step::json(200, PLAIN)]).await;
        let model = model_at(&server.base, 3, Some("sk-test"));
        let response = model.complete(&hello()).await.unwrap();
        assert_eq!(response.text, "Hello there.");
        assert!(response.calls.is_empty());
        assert_eq!(response.usage, Usage { input_tokens: 12, output_tokens: 3 });
        assert_eq!(response.raw.as_deref(), Some(PLAIN));

        let sent = &server.requests()[0];
        assert!(sent.head.starts_with("POST /v1/chat/completions HTTP/1.1"), "{}", sent.head);
        assert_eq!(sent.header("authorization").as_deref(), Some("Bearer sk-test"));
        assert_eq!(
            sent.body,
            json!({
                "model": "test-model",
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
                "seed": 7,
                "temperature": 0.25,
            })
        );
    }

    #[tokio::test]
    async fn no_key_sends_no_authorization_header() {
        let server = Server::start(vec![Step::json(200, PLAIN)]).await;
        model_at(&server.base, 1, None).complete(&hello()).await.unwrap();
        assert_eq!(server.requests()[0].header("authorization"), None);
    }

    #[tokio::test]
    async fn tool_calls_round_trip() {
        let reply = r#"{"choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":null,
            "tool_calls":[
              {"id":"call_a","type":"function","function":{"name":"search","arguments":"{\"query\":\"rust\"}"}},
              {"id":"call_b","type":"function","function":{"name":"open","arguments":"{\"path\": \"a.txt\""}}]}}],
            "usage":{"prompt_tokens":40,"completion_tokens":20}}"#;
        let server = Server::start(vec![Step::json(200, reply)]).await;
        let model = model_at(&server.base, 1, Some("k"));
        let previous = ToolCall { id: "call_0".into(), name: "search".into(), arguments: r#"{"query":"wasm"}"#.into() };
        let request = ModelRequest {
            system: String::new(),
            messages: vec![
                Message::user("find things"),
                Message::assistant("", vec![previous]),
                Message::tool("call_0", "3 results"),
            ],
            tools: vec![ToolSpec::new(
                "search",
                "Search the web.",
                json!({"type":"object","properties":{"query":{"type":"string"}}}),
            )],
            max_tokens: Some(64),
            ..Default::default()
        };
        let response = model.complete(&request).await.unwrap();
        assert_eq!(response.text, "");
        assert_eq!(
            response.calls,
            vec![
                ToolCall { id: "call_a".into(), name: "search".into(), arguments: r#"{"query":"rust"}"#.into() },
                // Malformed arguments are passed on verbatim for processors to repair.
                ToolCall { id: "call_b".into(), name: "open".into(), arguments: r#"{"path": "a.txt""#.into() },
            ]
        );
        assert_eq!(response.usage, Usage { input_tokens: 40, output_tokens: 20 });

        let body = &server.requests()[0].body;
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": "find things"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_0", "type": "function", "function": {"name": "search", "arguments": "{\"query\":\"wasm\"}"}}]},
                {"role": "tool", "tool_call_id": "call_0", "content": "3 results"},
            ])
        );
        assert_eq!(
            body["tools"],
            json!([{"type": "function", "function": {"name": "search", "description": "Search the web.",
                "parameters": {"type":"object","properties":{"query":{"type":"string"}}}}}])
        );
        assert_eq!(body["max_tokens"], json!(64));
    }

    #[tokio::test]
    async fn lenient_decoding_of_common_server_variants() {
        let reply = r#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}],
            "tool_calls":[{"function":{"name":"f","arguments":{"x":1}}}]}}]}"#;
        let response = decode(reply).unwrap();
        assert_eq!(response.text, "ab");
        assert_eq!(
            response.calls,
            vec![ToolCall { id: "call_0".into(), name: "f".into(), arguments: r#"{"x":1}"#.into() }]
        );
        assert_eq!(response.usage, Usage::default());
    }

    #[tokio::test]
    async fn bad_request_is_refused_with_the_provider_message_and_not_retried() {
        let error = r#"{"error":{"message":"Invalid value for 'temperature'","type":"invalid_request_error"}}"#;
        let server = Server::start(vec![Step::json(400, error), Step::json(200, PLAIN)]).await;
        let err = model_at(&server.base, 4, Some("k")).complete(&hello()).await.unwrap_err();
        match &err {
            ModelError::Refused { url, status, body } => {
                assert_eq!(*status, 400);
                assert_eq!(url, &format!("{}/v1/chat/completions", server.base));
                assert!(body.contains("Invalid value for 'temperature'"), "{body}");
            }
            other => panic!("expected Refused, got {other:?}"),
        }
        assert_eq!(server.count(), 1, "a 400 is not retried");
    }

    #[tokio::test]
    async fn unauthorized_names_the_key_variable() {
        let error = r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}"#;
        let server = Server::start(vec![Step::json(401, error)]).await;
        let err = model_at(&server.base, 3, None).complete(&hello()).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("Incorrect API key provided") && text.contains("set OPENAI_API_KEY"), "{text}");
        assert!(!text.contains("Bearer"), "{text}");
    }

    #[tokio::test]
    async fn rate_limit_with_retry_after_then_success() {
        let limited = r#"{"error":{"message":"Rate limit reached","type":"requests"}}"#;
        let server =
            Server::start(vec![Step::with_headers(429, &[("retry-after", "0")], limited), Step::json(200, PLAIN)])
                .await;
        let response = model_at(&server.base, 3, Some("k")).complete(&hello()).await.unwrap();
        assert_eq!(response.text, "Hello there.");
        assert_eq!(server.count(), 2);
    }

    #[tokio::test]
    async fn two_server_errors_then_success() {
        let server = Server::start(vec![
            Step::json(500, "oops"),
            Step::json(502, "<html>bad gateway</html>"),
            Step::json(200, PLAIN),
        ])
        .await;
        let response = model_at(&server.base, 3, Some("k")).complete(&hello()).await.unwrap();
        assert_eq!(response.text, "Hello there.");
        assert_eq!(server.count(), 3);
    }

    #[tokio::test]
    async fn persistent_unavailability_gives_up_after_max_attempts() {
        let server = Server::start(vec![Step::json(503, r#"{"error":{"message":"overloaded"}}"#)]).await;
        let err = model_at(&server.base, 3, Some("k")).complete(&hello()).await.unwrap_err();
        match &err {
            ModelError::Unavailable { status: 503, attempts: 3, body, .. } => {
                assert!(body.contains("overloaded"), "{body}")
            }
            other => panic!("expected Unavailable after 3 attempts, got {other:?}"),
        }
        assert_eq!(server.count(), 3);
    }

    #[tokio::test]
    async fn truncated_json_is_malformed() {
        let server = Server::start(vec![Step::json(200, &PLAIN[..60])]).await;
        let err = model_at(&server.base, 3, Some("k")).complete(&hello()).await.unwrap_err();
        match &err {
            ModelError::Malformed { reason, .. } => assert!(reason.contains("not complete JSON"), "{reason}"),
            other => panic!("expected Malformed, got {other:?}"),
        }
        assert_eq!(server.count(), 1, "a malformed 200 is not retried");
    }

    #[test]
    fn malformed_replies_say_what_was_wrong() {
        let cases = [
            (r#"{"id":"x"}"#, "no `choices` field"),
            (r#"{"choices":[]}"#, "`choices` is empty"),
            (r#"{"choices":"nope"}"#, "at `choices`"),
            (
                r#"{"choices":[{"message":{"tool_calls":[{"function":{"name":3}}]}}]}"#,
                "choices[0].message.tool_calls[0].function.name",
            ),
            (r#"{"choices":[{"message":{}}],"usage":{"prompt_tokens":"many"}}"#, "usage.prompt_tokens"),
            (r#"{"error":{"message":"upstream timeout"}}"#, "upstream timeout"),
        ];
        for (reply, expected) in cases {
            let reason = decode(reply).expect_err(reply);
            assert!(reason.contains(expected), "{reply}: {reason}");
        }
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let server = Server::start(vec![Step::Hang]).await;
        let mut config = OpenAiConfig::new("test-model", format!("{}/v1", server.base));
        config.http = fast(2);
        config.http.timeout = Duration::from_millis(300);
        let err = OpenAi::with_api_key(config, None).unwrap().complete(&hello()).await.unwrap_err();
        assert!(matches!(err, ModelError::Timeout { .. }), "{err:?}");
        assert_eq!(server.count(), 2, "a timeout is retried");
    }

    #[tokio::test]
    async fn connection_refused_is_unreachable() {
        let base = refused_base().await;
        let err = model_at(&base, 2, None).complete(&hello()).await.unwrap_err();
        match &err {
            ModelError::Unreachable { url, reason } => {
                assert_eq!(url, &format!("{base}/v1/chat/completions"));
                assert!(reason.contains("2 attempts") && reason.contains("base URL"), "{reason}");
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }

    #[test]
    fn bad_configuration_is_reported() {
        let err = OpenAi::with_api_key(OpenAiConfig::new("m", "localhost:8000"), None).unwrap_err();
        assert!(err.to_string().contains("localhost:8000"), "{err}");
        let err = OpenAi::with_api_key(OpenAiConfig::new(" ", "http://x/v1"), None).unwrap_err();
        assert!(err.to_string().contains("model name"), "{err}");
        let model = OpenAi::with_api_key(
            OpenAiConfig::new("m", "http://x:1/v1/"),
            Some(SecretString::from("s3cret".to_owned())),
        )
        .unwrap();
        assert_eq!(model.describe(), "openai:m@http://x:1/v1");
        assert!(!format!("{model:?}").contains("s3cret"), "the key never shows in Debug output");
    }
}
