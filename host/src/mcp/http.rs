//! The streamable-HTTP transport: POST each message, read JSON or SSE back.
//!
//! Every request is a POST of one JSON-RPC message with
//! `Accept: application/json, text/event-stream`. The reply is either a JSON
//! body or an event stream whose events carry JSON-RPC messages in their
//! `data:` lines; the stream is read only until the response with our id
//! arrives. The `Mcp-Session-Id` from `initialize` and the negotiated
//! `MCP-Protocol-Version` ride on every later request, and dropping the
//! transport DELETEs the session. `ureq`'s global timeout bounds each call
//! end to end, body included.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use serde_json::{json, Value};

use super::{McpError, Transport};

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
/// How long the session DELETE on drop may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The most of an error body quoted in a message.
const QUOTED_BODY: usize = 500;

pub(super) struct HttpTransport {
    url: String,
    agent: ureq::Agent,
    session: Option<String>,
    protocol: Option<String>,
}

impl HttpTransport {
    pub(super) fn new(url: &str) -> HttpTransport {
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
        HttpTransport { url: url.to_string(), agent, session: None, protocol: None }
    }

    fn error(&self, method: &str, reason: String) -> McpError {
        McpError::Http { server: self.url.clone(), method: method.to_string(), reason }
    }

    fn failed(&self, method: &str, timeout: Duration, e: ureq::Error) -> McpError {
        match e {
            ureq::Error::Timeout(_) => self.timed_out(method, timeout),
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => self.timed_out(method, timeout),
            other => self.error(method, other.to_string()),
        }
    }

    fn timed_out(&self, method: &str, after: Duration) -> McpError {
        McpError::Timeout { server: self.url.clone(), method: method.to_string(), after, stderr: String::new() }
    }

    /// POST one message; returns the status, the content type and the body.
    fn post(
        &mut self,
        method: &str,
        message: &Value,
        timeout: Duration,
    ) -> Result<(u16, String, ureq::Body), McpError> {
        let mut request = self
            .agent
            .post(&self.url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some(session) = &self.session {
            request = request.header(SESSION_HEADER, session);
        }
        if let Some(version) = &self.protocol {
            request = request.header(VERSION_HEADER, version);
        }
        let response = request.send(message.to_string()).map_err(|e| self.failed(method, timeout, e))?;
        if let Some(session) = response.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()) {
            self.session = Some(session.to_string());
        }
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
        let body = response.into_body();
        if !(200..300).contains(&status) {
            let mut body = body;
            let text = body.read_to_string().unwrap_or_default();
            let mut quoted: String = text.chars().take(QUOTED_BODY).collect();
            if quoted.len() < text.len() {
                quoted.push_str("...");
            }
            let hint = match (status, &self.session) {
                (404, Some(session)) => format!(" (the server no longer knows session `{session}`)"),
                _ => String::new(),
            };
            return Err(self.error(method, format!("HTTP {status}{hint}: {}", quoted.trim())));
        }
        Ok((status, content_type, body))
    }
}

/// Whether `message` is the response to request `id`.
fn is_response_to(message: &Value, id: u64) -> bool {
    (message.get("result").is_some() || message.get("error").is_some()) && message.get("id") == Some(&json!(id))
}

/// The JSON-RPC messages in one JSON body: a message or a batch of them.
fn messages_in(body: Value) -> Vec<Value> {
    match body {
        Value::Array(items) => items,
        single => vec![single],
    }
}

impl Transport for HttpTransport {
    fn request(&mut self, id: u64, method: &str, message: &Value, timeout: Duration) -> Result<Value, McpError> {
        let (status, content_type, mut body) = self.post(method, message, timeout)?;
        if content_type.starts_with("text/event-stream") {
            let reader = BufReader::new(body.as_reader());
            let mut found = None;
            let mut read_error = None;
            parse_sse_data(reader, |data| match serde_json::from_str::<Value>(data) {
                Ok(event) => {
                    found = messages_in(event).into_iter().find(|m| is_response_to(m, id));
                    found.is_none()
                }
                Err(e) => {
                    read_error = Some(format!("an event's data is not JSON ({e}): {data}"));
                    false
                }
            })
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::TimedOut => self.timed_out(method, timeout),
                _ => self.error(method, format!("reading the event stream failed: {e}")),
            })?;
            if let Some(reply) = found {
                return Ok(reply);
            }
            let reason = read_error.unwrap_or_else(|| "the event stream ended without the reply".to_string());
            return Err(McpError::Protocol { server: self.url.clone(), method: method.to_string(), reason });
        }
        if content_type.starts_with("application/json") {
            let text = body.read_to_string().map_err(|e| self.failed(method, timeout, e))?;
            let parsed: Value = serde_json::from_str(&text).map_err(|e| McpError::Protocol {
                server: self.url.clone(),
                method: method.to_string(),
                reason: format!("the body is not JSON ({e}): {text}"),
            })?;
            return messages_in(parsed).into_iter().find(|m| is_response_to(m, id)).ok_or_else(|| McpError::Protocol {
                server: self.url.clone(),
                method: method.to_string(),
                reason: format!("no response with id {id} in the body: {text}"),
            });
        }
        Err(McpError::Protocol {
            server: self.url.clone(),
            method: method.to_string(),
            reason: format!("HTTP {status} with content type `{content_type}`, not JSON or an event stream"),
        })
    }

    fn notify(&mut self, method: &str, message: &Value, timeout: Duration) -> Result<(), McpError> {
        let (_, _, mut body) = self.post(method, message, timeout)?;
        // Drain whatever came back (usually nothing: 202 Accepted).
        let _ = body.read_to_string();
        Ok(())
    }

    fn negotiated(&mut self, version: &str) {
        self.protocol = Some(version.to_string());
    }
}

impl Drop for HttpTransport {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else { return };
        let mut request = self.agent.delete(&self.url).config().timeout_global(Some(CLOSE_TIMEOUT)).build();
        request = request.header(SESSION_HEADER, &session);
        if let Some(version) = &self.protocol {
            request = request.header(VERSION_HEADER, version);
        }
        // Best effort: a server may answer 405 (it keeps sessions itself).
        let _ = request.call();
    }
}

/// Read a `text/event-stream` and hand each event's data to `on_event`
/// (its `data:` lines joined with `\n`), until the stream ends or
/// `on_event` returns `false`. Comments and the `event`, `id` and `retry`
/// fields are skipped; an event with no data is not handed over.
pub fn parse_sse_data<R: BufRead>(mut reader: R, mut on_event: impl FnMut(&str) -> bool) -> std::io::Result<()> {
    let mut data = String::new();
    let mut has_data = false;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        let text = line.trim_end_matches(['\n', '\r']);
        if n == 0 || text.is_empty() {
            if has_data && !on_event(&data) {
                return Ok(());
            }
            data.clear();
            has_data = false;
            if n == 0 {
                return Ok(());
            }
            continue;
        }
        if text.starts_with(':') {
            continue;
        }
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text, ""),
        };
        if field == "data" {
            if has_data {
                data.push('\n');
            }
            data.push_str(value);
            has_data = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(stream: &str) -> Vec<String> {
        let mut out = Vec::new();
        parse_sse_data(stream.as_bytes(), |d| {
            out.push(d.to_string());
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn sse_events_join_their_data_lines_and_skip_the_rest() {
        let stream =
            ": keep-alive\r\nevent: message\r\nid: 7\r\ndata: {\"a\":\r\ndata:1}\r\n\r\nretry: 10\n\ndata: last";
        assert_eq!(events(stream), vec!["{\"a\":\n1}".to_string(), "last".to_string()]);
    }

    #[test]
    fn sse_reading_stops_when_the_callback_says_so() {
        let mut seen = 0;
        parse_sse_data("data: 1\n\ndata: 2\n\n".as_bytes(), |_| {
            seen += 1;
            false
        })
        .unwrap();
        assert_eq!(seen, 1);
    }

    #[test]
    fn batches_and_single_messages_are_searched_for_the_reply() {
        let batch = json!([{ "jsonrpc": "2.0", "method": "notifications/progress" }, { "jsonrpc": "2.0", "id": 4, "result": {} }]);
        assert!(messages_in(batch).iter().any(|m| is_response_to(m, 4)));
        assert!(!is_response_to(&json!({ "jsonrpc": "2.0", "id": 4, "method": "ping" }), 4));
    }
}
