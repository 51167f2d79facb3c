//! HTTP plumbing shared by the HTTP model backends: one client, one retry
//! policy, one way of turning transport and status failures into
//! [`ModelError`]s.
//!
//! The backends ([`super::openai`], [`super::anthropic`]) only build a JSON
//! body and parse a JSON reply; everything between — timeouts, retries,
//! backoff, `Retry-After`, classifying failures, naming the URL and a hint in
//! the error — lives here so every backend behaves the same way.
//!
//! Policy, in one place ([`HttpClient::post_json`]):
//!
//! - **Retried** (up to [`RetryPolicy::max_attempts`] attempts in all): HTTP
//!   408, 429 and every 5xx; connection failures; timeouts; a reply body that
//!   breaks off mid-read.
//! - **Not retried**: any other 3xx/4xx. It is a refusal of *this* request
//!   ([`ModelError::Refused`]), reported with the provider's own error message
//!   and a hint (the API key variable on 401/403, the base URL and model name
//!   on 404).
//! - **Backoff** is exponential from [`RetryPolicy::base_delay`], capped at
//!   [`RetryPolicy::max_delay`], with jitter in `[50%, 100%]` of the step.
//!   The jitter is deterministic: it is drawn from a hash of the request body
//!   and the attempt number, so a rerun of the same request waits the same
//!   way, while different requests hitting a rate limit together still spread
//!   out.
//! - **`Retry-After`** (seconds, or `retry-after-ms`) is a floor on the wait,
//!   itself capped at [`RetryPolicy::max_retry_after`] so a server cannot
//!   park a run for an hour.
//!
//! A 2xx reply is returned as text; parsing it (and reporting a malformed
//! reply) is the backend's job, because only the backend knows the format.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, USER_AGENT};
use reqwest::StatusCode;
use secrecy::SecretString;

use super::ModelError;

/// How often and how patiently a request is retried.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. `1` disables retries; `0` is
    /// treated as `1`.
    pub max_attempts: u32,
    /// The wait before the second attempt; it doubles for each later one.
    pub base_delay: Duration,
    /// The largest backoff step, before jitter.
    pub max_delay: Duration,
    /// The longest `Retry-After` that is honoured; longer requests are cut to
    /// this.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, waits of about 0.5 s, 1 s, 2 s; `Retry-After` honoured up
    /// to 60 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based) of a request
    /// whose jitter seed is `seed`, given the server's `Retry-After`, if any.
    pub fn delay(&self, attempt: u32, seed: u64, retry_after: Option<Duration>) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        let step = self.base_delay.saturating_mul(1u32 << doublings).min(self.max_delay);
        let unit = splitmix64(seed ^ u64::from(attempt)) as f64 / u64::MAX as f64;
        let jittered = step.mul_f64(0.5 + 0.5 * unit);
        match retry_after {
            Some(asked) => jittered.max(asked.min(self.max_retry_after)),
            None => jittered,
        }
    }
}

/// Timeouts and retries of one HTTP endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSettings {
    /// The whole request, from connecting to the last byte of the reply.
    pub timeout: Duration,
    /// Establishing the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// What is retried and how long to wait in between.
    pub retry: RetryPolicy,
}

impl Default for HttpSettings {
    /// 120 s per request (long generations are slow), 10 s to connect, the
    /// default [`RetryPolicy`].
    fn default() -> Self {
        HttpSettings {
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

/// Hints appended to a refusal so the user knows what to change.
#[derive(Clone, Debug, Default)]
pub struct RefusalHints {
    /// Shown on 401 and 403, e.g. "set OPENAI_API_KEY to your API key".
    pub unauthorized: Option<String>,
    /// Shown on 404, e.g. "check the base URL and the model name".
    pub not_found: Option<String>,
}

/// A `reqwest` client with the settings and the retry policy of one backend.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: reqwest::Client,
    settings: HttpSettings,
}

/// One failed attempt that may succeed if tried again.
#[derive(Debug)]
enum Transient {
    Status { status: u16, message: String, retry_after: Option<Duration> },
    Timeout,
    Unreachable(String),
    BodyCut(String),
}

/// The outcome of one attempt.
enum Attempt {
    Done(String),
    Retry(Transient),
}

impl HttpClient {
    /// Build a client. Redirects are not followed: a POST that is redirected
    /// would silently turn into a GET, so a 3xx is reported with its target.
    pub fn new(settings: HttpSettings) -> Result<Self, ModelError> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ModelError::Config(format!("cannot build the HTTP client: {}", error_chain(&e))))?;
        Ok(HttpClient { client, settings })
    }

    /// The settings this client was built with.
    pub fn settings(&self) -> &HttpSettings {
        &self.settings
    }

    /// POST `body` (JSON bytes) to `url` with `headers`, retrying as the
    /// policy says, and return the body of the first 2xx reply.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &HeaderMap,
        body: Vec<u8>,
        hints: &RefusalHints,
    ) -> Result<String, ModelError> {
        let policy = &self.settings.retry;
        let max_attempts = policy.max_attempts.max(1);
        let seed = jitter_seed(url, &body);
        let mut attempt = 1;
        loop {
            let failure = match self.attempt(url, headers, &body, hints).await? {
                Attempt::Done(text) => return Ok(text),
                Attempt::Retry(failure) => failure,
            };
            if attempt >= max_attempts {
                return Err(self.give_up(url, attempt, failure));
            }
            let retry_after = match &failure {
                Transient::Status { retry_after, .. } => *retry_after,
                _ => None,
            };
            let wait = policy.delay(attempt, seed, retry_after);
            tracing::debug!(url, attempt, ?failure, wait_ms = wait.as_millis() as u64, "retrying model request");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        url: &str,
        headers: &HeaderMap,
        body: &[u8],
        hints: &RefusalHints,
    ) -> Result<Attempt, ModelError> {
        let sent = self
            .client
            .post(url)
            .headers(headers.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static(concat!("kiln/", env!("CARGO_PKG_VERSION"))))
            .body(body.to_vec())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) if e.is_timeout() => return Ok(Attempt::Retry(Transient::Timeout)),
            Err(e) if e.is_builder() => {
                return Err(ModelError::Config(format!("cannot build a request to {url}: {}", error_chain(&e))))
            }
            Err(e) => return Ok(Attempt::Retry(Transient::Unreachable(error_chain(&e)))),
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let location =
            response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) if e.is_timeout() => return Ok(Attempt::Retry(Transient::Timeout)),
            Err(e) => return Ok(Attempt::Retry(Transient::BodyCut(error_chain(&e)))),
        };
        if status.is_success() {
            return Ok(Attempt::Done(text));
        }
        let message = provider_message(&text);
        if is_retryable(status) {
            return Ok(Attempt::Retry(Transient::Status { status: status.as_u16(), message, retry_after }));
        }
        let hint = match status.as_u16() {
            401 | 403 => hints.unauthorized.clone(),
            404 => hints.not_found.clone(),
            300..=399 => Some(match location {
                Some(target) => format!("the server redirects to {target}; use that as the base URL"),
                None => "the server answered with a redirect; check the base URL".to_owned(),
            }),
            _ => None,
        };
        Err(ModelError::Refused { url: url.to_owned(), status: status.as_u16(), body: with_hint(message, hint) })
    }

    fn give_up(&self, url: &str, attempts: u32, failure: Transient) -> ModelError {
        let url = url.to_owned();
        let tries = if attempts == 1 { "1 attempt".to_owned() } else { format!("{attempts} attempts") };
        match failure {
            Transient::Status { status, message, .. } => {
                let hint = match status {
                    429 => Some("the provider is rate limiting; wait, lower the request rate, or raise max_attempts"),
                    _ => Some("the provider is failing; retry later or configure a fallback model"),
                };
                ModelError::Unavailable { url, status, attempts, body: with_hint(message, hint.map(str::to_owned)) }
            }
            Transient::Timeout => ModelError::Timeout { url, secs: self.settings.timeout.as_secs_f64() },
            Transient::Unreachable(reason) => ModelError::Unreachable {
                url,
                reason: format!("{reason} ({tries}); check that the server is running and the base URL is right"),
            },
            Transient::BodyCut(reason) => ModelError::Malformed {
                url,
                reason: format!("the reply body broke off before its end: {reason} ({tries})"),
            },
        }
    }
}

/// The API key in environment variable `name`; unset or empty means none.
pub fn read_key(name: &str) -> Option<SecretString> {
    std::env::var(name).ok().filter(|key| !key.trim().is_empty()).map(|key| SecretString::from(key.trim().to_owned()))
}

/// Check that `base` is an absolute http(s) URL and return it without a
/// trailing `/`, ready for `format!("{base}/path")`.
pub fn validate_base_url(base: &str) -> Result<String, ModelError> {
    let trimmed = base.trim().trim_end_matches('/');
    match reqwest::Url::parse(trimmed) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(trimmed.to_owned()),
        Ok(url) => Err(ModelError::Config(format!(
            "base URL `{base}` uses scheme `{}`; use http:// or https://",
            url.scheme()
        ))),
        Err(e) => Err(ModelError::Config(format!(
            "base URL `{base}` is not a valid URL ({e}); write it like http://localhost:8000/v1"
        ))),
    }
}

/// 408 Request Timeout, 429 Too Many Requests and every 5xx are worth another
/// try; other statuses will not change on a retry.
fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// `retry-after-ms` (OpenAI, Azure) or `Retry-After` in (possibly fractional)
/// seconds. The HTTP-date form is ignored: the backoff applies instead.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| -> Option<f64> {
        let value: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
        (value.is_finite() && value >= 0.0).then_some(value)
    };
    if let Some(ms) = number("retry-after-ms") {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    number("retry-after").map(Duration::from_secs_f64)
}

/// The provider's own words from an error body: `error.message` (OpenAI and
/// Anthropic both use it), a string `error`, or a top-level `message`;
/// otherwise the body itself, shortened.
pub fn provider_message(body: &str) -> String {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(body) {
        let candidates =
            [value.pointer("/error/message"), value.get("error"), value.get("message"), value.get("detail")];
        if let Some(text) = candidates.into_iter().flatten().find_map(|v| v.as_str()) {
            return text.to_owned();
        }
    }
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return "(empty body)".to_owned();
    }
    shorten(trimmed, 500)
}

/// At most `max` characters of `text`, with an ellipsis when cut.
pub fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn with_hint(message: String, hint: Option<String>) -> String {
    match hint {
        Some(hint) => format!("{message}; hint: {hint}"),
        None => message,
    }
}

/// What went wrong, from an error's causes joined with ": ". reqwest's
/// top-level message ("error sending request for url (...)") only repeats the
/// URL the caller already names, so it is used only when there is no cause.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let Some(first) = error.source() else { return error.to_string() };
    let mut parts = vec![first.to_string()];
    let mut source = first.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

fn jitter_seed(url: &str, body: &[u8]) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(url.as_bytes());
    hasher.update(&[0]);
    hasher.update(body);
    let bytes = hasher.finalize();
    u64::from_le_bytes(bytes.as_bytes()[..8].try_into().expect("blake3 hashes are 32 bytes"))
}

/// SplitMix64: a tiny, well-mixed hash from one u64 to another.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A scripted HTTP/1.1 server on loopback for the backends' tests.
///
/// Each accepted connection reads one request and plays the next step of the
/// script: a raw response (which may be truncated or lie about its length),
/// silence (the connection is held open and never answered), or an immediate
/// close. When the script runs out, the last step repeats. Every request is
/// recorded so tests can count calls and inspect the bodies that were sent.
#[cfg(test)]
pub(crate) mod loopback {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// What the server does with one request.
    #[derive(Clone, Debug)]
    pub enum Step {
        /// Write these bytes verbatim, then close.
        Raw(Vec<u8>),
        /// Never answer; hold the connection open.
        Hang,
        /// Close the connection without answering.
        Close,
    }

    impl Step {
        /// A complete response with a correct Content-Length.
        pub fn json(status: u16, body: &str) -> Step {
            Step::with_headers(status, &[], body)
        }

        /// A complete response with extra headers.
        pub fn with_headers(status: u16, headers: &[(&str, &str)], body: &str) -> Step {
            let mut head = format!(
                "HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(body.as_bytes());
            Step::Raw(bytes)
        }

        /// A response that announces `announced` body bytes but sends only
        /// `body`, then closes.
        pub fn cut_short(status: u16, body: &str, announced: usize) -> Step {
            let head = format!(
                "HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\ncontent-length: {announced}\r\nconnection: close\r\n\r\n"
            );
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(body.as_bytes());
            Step::Raw(bytes)
        }
    }

    /// One request as the server received it.
    #[derive(Clone, Debug)]
    pub struct Received {
        /// The request line and headers, as text.
        pub head: String,
        /// The body, parsed as JSON (`Null` if it was not JSON).
        pub body: serde_json::Value,
    }

    impl Received {
        /// The value of header `name` (case-insensitive), if present.
        pub fn header(&self, name: &str) -> Option<String> {
            self.head.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
            })
        }
    }

    /// A running scripted server; it stops when the test's runtime ends.
    pub struct Server {
        /// `http://127.0.0.1:PORT`.
        pub base: String,
        received: Arc<Mutex<Vec<Received>>>,
    }

    impl Server {
        /// Start a server playing `script` in order.
        pub async fn start(script: Vec<Step>) -> Server {
            assert!(!script.is_empty(), "a script needs at least one step");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
            let base = format!("http://{}", listener.local_addr().expect("local addr"));
            let received = Arc::new(Mutex::new(Vec::new()));
            let log = received.clone();
            tokio::spawn(async move {
                let mut parked = Vec::new();
                let mut index = 0;
                while let Ok((mut stream, _)) = listener.accept().await {
                    let Some(request) = read_request(&mut stream).await else { continue };
                    log.lock().unwrap().push(request);
                    let step = script[index.min(script.len() - 1)].clone();
                    index += 1;
                    match step {
                        Step::Raw(bytes) => {
                            let _ = stream.write_all(&bytes).await;
                            let _ = stream.shutdown().await;
                        }
                        Step::Hang => parked.push(stream),
                        Step::Close => drop(stream),
                    }
                }
            });
            Server { base, received }
        }

        /// How many requests arrived so far.
        pub fn count(&self) -> usize {
            self.received.lock().unwrap().len()
        }

        /// Every request so far, in order.
        pub fn requests(&self) -> Vec<Received> {
            self.received.lock().unwrap().clone()
        }
    }

    async fn read_request(stream: &mut TcpStream) -> Option<Received> {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let length = head
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let mut body = buffer[head_end + 4..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        Some(Received { head, body })
    }

    /// Settings for tests: millisecond backoff, and timeouts generous
    /// enough for a loaded machine (the "never answers" test lowers them).
    pub fn fast(max_attempts: u32) -> super::HttpSettings {
        use std::time::Duration;
        super::HttpSettings {
            timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(20),
            retry: super::RetryPolicy {
                max_attempts,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(5),
                max_retry_after: Duration::from_secs(2),
            },
        }
    }

    /// A loopback URL on which nothing listens (connections are refused).
    pub async fn refused_base() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        drop(listener);
        format!("http://{addr}")
    }
}

#[cfg(test)]
mod tests {
    use super::loopback::{fast, Server, Step};
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jitter_is_deterministic() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(800),
            max_retry_after: Duration::from_secs(5),
        };
        for attempt in 1..=6 {
            let step = Duration::from_millis(100 * (1 << (attempt - 1))).min(Duration::from_millis(800));
            let wait = policy.delay(attempt, 42, None);
            assert!(wait >= step / 2 && wait <= step, "attempt {attempt}: {wait:?} not in [{:?}, {step:?}]", step / 2);
            assert_eq!(wait, policy.delay(attempt, 42, None), "same seed, same wait");
        }
        let waits: Vec<_> = (0..8).map(|seed| policy.delay(3, seed, None)).collect();
        assert!(waits.windows(2).any(|w| w[0] != w[1]), "different seeds should spread out: {waits:?}");
    }

    #[test]
    fn retry_after_is_a_floor_with_a_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(1, 7, Some(Duration::from_secs(7))), Duration::from_secs(7));
        assert_eq!(policy.delay(1, 7, Some(Duration::from_secs(3600))), policy.max_retry_after);
        assert!(policy.delay(1, 7, Some(Duration::ZERO)) > Duration::ZERO, "backoff still applies");
    }

    #[test]
    fn retry_after_headers_are_parsed() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert("retry-after", HeaderValue::from_static("1.5"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        headers.insert("retry-after", HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
    }

    #[test]
    fn provider_messages_are_extracted() {
        assert_eq!(provider_message(r#"{"error":{"message":"bad model","type":"x"}}"#), "bad model");
        assert_eq!(
            provider_message(
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: required"}}"#
            ),
            "max_tokens: required"
        );
        assert_eq!(provider_message(r#"{"error":"plain"}"#), "plain");
        assert_eq!(provider_message("  <html>oops</html> "), "<html>oops</html>");
        assert_eq!(provider_message(""), "(empty body)");
        assert_eq!(shorten("abcdef", 3), "abc…");
    }

    #[tokio::test]
    async fn a_redirect_is_refused_with_its_target() {
        let server =
            Server::start(vec![Step::with_headers(308, &[("location", "https://elsewhere.example/v1")], "")]).await;
        let client = HttpClient::new(fast(3)).unwrap();
        let url = format!("{}/chat/completions", server.base);
        let err =
            client.post_json(&url, &HeaderMap::new(), b"{}".to_vec(), &RefusalHints::default()).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ModelError::Refused { status: 308, .. }), "{text}");
        assert!(text.contains("https://elsewhere.example/v1"), "{text}");
        assert_eq!(server.count(), 1);
    }

    #[tokio::test]
    async fn a_closed_connection_is_retried_then_reported_as_unreachable() {
        let server = Server::start(vec![Step::Close]).await;
        let client = HttpClient::new(fast(3)).unwrap();
        let url = format!("{}/x", server.base);
        let err =
            client.post_json(&url, &HeaderMap::new(), b"{}".to_vec(), &RefusalHints::default()).await.unwrap_err();
        assert!(matches!(err, ModelError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("3 attempts"), "{err}");
        assert_eq!(server.count(), 3);
    }

    #[tokio::test]
    async fn a_body_cut_short_is_retried_then_malformed() {
        let server = Server::start(vec![Step::cut_short(200, r#"{"choices":["#, 400)]).await;
        let client = HttpClient::new(fast(2)).unwrap();
        let url = format!("{}/x", server.base);
        let err =
            client.post_json(&url, &HeaderMap::new(), b"{}".to_vec(), &RefusalHints::default()).await.unwrap_err();
        assert!(matches!(err, ModelError::Malformed { .. }), "{err}");
        assert!(err.to_string().contains("broke off"), "{err}");
        assert_eq!(server.count(), 2);
    }
}
