//! A small, synchronous Model Context Protocol client: tools from MCP servers.
//!
//! [`McpClient`] speaks MCP (protocol `2025-06-18`) over either transport the
//! spec defines: **stdio** (a child process, newline-delimited JSON-RPC 2.0 on
//! its stdin and stdout) and **streamable HTTP** (each JSON-RPC message is
//! POSTed to one endpoint; the reply is `application/json` or a
//! `text/event-stream` whose `data:` lines carry it; the `Mcp-Session-Id`
//! header the server hands out at `initialize` rides on every later request).
//! It covers what a harness needs of a tool server: `initialize` plus
//! `notifications/initialized`, `tools/list` (following `nextCursor`) and
//! `tools/call`. [`McpTools`] puts one server's tools into a task's tool list.
//!
//! Design choices:
//! - **Written here, not `rmcp`.** The official Rust SDK (`rmcp` 3.x) builds
//!   its streamable-HTTP client on reqwest 0.13, a second HTTP stack next to
//!   the reqwest 0.12 this crate already has; its releases on reqwest 0.12
//!   are old majors. The subset above takes a few hundred lines, so it is written
//!   here on what the crate already depends on.
//! - **Synchronous.** [`crate::env::Environment`] is synchronous and is called
//!   from inside the async agent loop, where blocking on a nested runtime
//!   would panic. So stdio uses plain threads and channels, and HTTP uses
//!   `ureq` (already a dependency, with rustls), not reqwest.
//! - **Every request has a deadline** ([`McpClient::set_timeout`]); a server
//!   that does not answer in time is an error, never a hang.
//! - **Errors say which server and what failed** ([`McpError`]): it failed to
//!   start, exited (with its status and the tail of its stderr), timed out,
//!   answered with a JSON-RPC error, or a tool reported `isError`.
//! - **A stdio server runs in its own process group** and the whole group is
//!   killed when the client is dropped, so a server that forks helpers leaves
//!   nothing behind.

mod http;
mod stdio;
mod tools;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::chat::ToolSpec;

pub use self::http::parse_sse_data;
pub use self::tools::McpTools;

/// The protocol revision this client asks for.
pub const PROTOCOL_VERSION: &str = "2025-06-18";
/// Revisions a server may answer with: they agree on everything used here.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["2025-06-18", "2025-03-26", "2024-11-05"];
/// How long one request may take unless [`McpClient::set_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong talking to an MCP server. Every variant names the server
/// (its command line or URL) and, where there is one, the method that failed.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("MCP server `{server}` failed to start: {source}")]
    Start {
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error("MCP server `{server}` exited during `{method}` ({status}){}", stderr_note(.stderr))]
    Exited { server: String, method: String, status: String, stderr: String },
    #[error("MCP server `{server}` did not answer `{method}` within {}{}", secs(.after), stderr_note(.stderr))]
    Timeout { server: String, method: String, after: Duration, stderr: String },
    #[error("MCP server `{server}` answered `{method}` with JSON-RPC error {code}: {message}")]
    Rpc { server: String, method: String, code: i64, message: String, data: Option<Value> },
    #[error("MCP tool `{tool}` on server `{server}` returned an error: {message}")]
    Tool { server: String, tool: String, message: String },
    #[error("MCP server `{server}` sent a malformed reply to `{method}`: {reason}")]
    Protocol { server: String, method: String, reason: String },
    #[error("MCP server `{server}`: the HTTP request for `{method}` failed: {reason}")]
    Http { server: String, method: String, reason: String },
}

fn secs(d: &Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn stderr_note(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("; the end of its stderr:\n{}", tail.trim_end())
    }
}

/// How to start a stdio MCP server: a program, its arguments, extra
/// environment variables and an optional working directory.
#[derive(Clone, Debug)]
pub struct ServerCommand {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
}

impl ServerCommand {
    /// Run `program` (a path, or a name looked up on `PATH`).
    pub fn new(program: impl Into<PathBuf>) -> ServerCommand {
        ServerCommand { program: program.into(), args: Vec::new(), env: Vec::new(), cwd: None }
    }
    /// Add one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> ServerCommand {
        self.args.push(arg.into());
        self
    }
    /// Set one environment variable for the server (the rest is inherited).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> ServerCommand {
        self.env.push((key.into(), value.into()));
        self
    }
    /// Start the server in `dir`.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> ServerCommand {
        self.cwd = Some(dir.into());
        self
    }
    /// The command line as errors show it.
    pub fn display(&self) -> String {
        let mut out = self.program.display().to_string();
        for arg in &self.args {
            out.push(' ');
            out.push_str(&arg.to_string_lossy());
        }
        out
    }
}

/// Who answered `initialize`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerInfo {
    pub name: String,
    pub version: String,
    /// The protocol revision the server chose.
    pub protocol_version: String,
    /// The server's usage instructions, if it gave any.
    pub instructions: Option<String>,
}

/// One tool as `tools/list` describes it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct McpTool {
    pub name: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// A JSON Schema of the arguments (an object schema).
    #[serde(rename = "inputSchema", default = "empty_object_schema")]
    pub input_schema: Value,
}

fn empty_object_schema() -> Value {
    json!({ "type": "object", "properties": {} })
}

impl McpTool {
    /// The tool as the model sees it: name, description (the title when
    /// there is no description) and `inputSchema` as the parameters.
    pub fn to_spec(&self) -> ToolSpec {
        let description = self.description.clone().or_else(|| self.title.clone()).unwrap_or_default();
        ToolSpec::new(self.name.clone(), description, self.input_schema.clone())
    }
}

/// The result of `tools/call`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct CallToolResult {
    /// Content blocks (`text`, `image`, `audio`, `resource_link`, `resource`).
    #[serde(default)]
    pub content: Vec<Value>,
    #[serde(rename = "structuredContent", default)]
    pub structured_content: Option<Value>,
    /// The tool itself failed (the call reached it; the server is fine).
    #[serde(rename = "isError", default)]
    pub is_error: bool,
}

impl CallToolResult {
    /// The content as one text: text blocks as they are, embedded text
    /// resources by their text, other blocks as a short `[kind ...]` note.
    /// With no content blocks, the structured content as JSON.
    pub fn text(&self) -> String {
        if self.content.is_empty() {
            return self.structured_content.as_ref().map(Value::to_string).unwrap_or_default();
        }
        let parts: Vec<String> = self.content.iter().map(render_block).collect();
        parts.join("\n")
    }
}

fn render_block(block: &Value) -> String {
    let str_of = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_string();
    match block.get("type").and_then(Value::as_str) {
        Some("text") => str_of(block, "text"),
        Some("resource") => {
            let resource = block.get("resource").cloned().unwrap_or(Value::Null);
            match resource.get("text").and_then(Value::as_str) {
                Some(text) => text.to_string(),
                None => format!("[resource {}]", str_of(&resource, "uri")),
            }
        }
        Some("resource_link") => format!("[resource link {}]", str_of(block, "uri")),
        Some(kind @ ("image" | "audio")) => format!("[{kind} {}]", str_of(block, "mimeType")),
        _ => block.to_string(),
    }
}

/// How the client moves messages; one implementation per MCP transport.
trait Transport: Send {
    /// Send request `message` (whose id is `id`) and return the response
    /// message with that id (a `result` or an `error` object).
    fn request(&mut self, id: u64, method: &str, message: &Value, timeout: Duration) -> Result<Value, McpError>;
    /// Send a notification; nothing comes back.
    fn notify(&mut self, method: &str, message: &Value, timeout: Duration) -> Result<(), McpError>;
    /// Told once `initialize` has picked a protocol revision.
    fn negotiated(&mut self, _version: &str) {}
}

/// A connection to one MCP server, initialized and ready for tool calls.
/// Dropping it stops the server (stdio) or ends the session (HTTP).
pub struct McpClient {
    transport: Box<dyn Transport>,
    server: String,
    next_id: u64,
    timeout: Duration,
    info: ServerInfo,
}

impl std::fmt::Debug for McpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpClient").field("server", &self.server).field("info", &self.info).finish()
    }
}

impl McpClient {
    /// Start a stdio server and initialize it. `timeout` bounds each request,
    /// `initialize` included.
    pub fn spawn(command: &ServerCommand, timeout: Duration) -> Result<McpClient, McpError> {
        let transport = stdio::StdioTransport::spawn(command)?;
        McpClient::handshake(Box::new(transport), command.display(), timeout)
    }

    /// Connect to a streamable-HTTP server at `url` and initialize a session.
    pub fn connect_http(url: &str, timeout: Duration) -> Result<McpClient, McpError> {
        let transport = http::HttpTransport::new(url);
        McpClient::handshake(Box::new(transport), url.to_string(), timeout)
    }

    fn handshake(transport: Box<dyn Transport>, server: String, timeout: Duration) -> Result<McpClient, McpError> {
        let mut client = McpClient { transport, server, next_id: 1, timeout, info: ServerInfo::default() };
        let result = client.request(
            "initialize",
            Some(json!({
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": { "name": "kiln", "version": env!("CARGO_PKG_VERSION") },
            })),
        )?;
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        let protocol_version = text(result.get("protocolVersion")).ok_or_else(|| McpError::Protocol {
            server: client.server.clone(),
            method: "initialize".into(),
            reason: format!("no `protocolVersion` in {result}"),
        })?;
        if !SUPPORTED_VERSIONS.contains(&protocol_version.as_str()) {
            return Err(McpError::Protocol {
                server: client.server.clone(),
                method: "initialize".into(),
                reason: format!(
                    "it speaks protocol {protocol_version}, and this client knows {}",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            });
        }
        let server_info = result.get("serverInfo");
        client.info = ServerInfo {
            name: text(server_info.and_then(|s| s.get("name"))).unwrap_or_default(),
            version: text(server_info.and_then(|s| s.get("version"))).unwrap_or_default(),
            protocol_version,
            instructions: text(result.get("instructions")),
        };
        client.transport.negotiated(&client.info.protocol_version);
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        client.transport.notify("notifications/initialized", &note, client.timeout)?;
        Ok(client)
    }

    /// The server's command line or URL, as errors name it.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// What the server said about itself at `initialize`.
    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    /// Bound every later request by `timeout`.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Send one JSON-RPC request and return its `result`. A JSON-RPC error
    /// reply is [`McpError::Rpc`] with the server's message.
    pub fn request(&mut self, method: &str, params: Option<Value>) -> Result<Value, McpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "jsonrpc": "2.0", "id": id, "method": method });
        if let Some(params) = params {
            message["params"] = params;
        }
        let mut reply = self.transport.request(id, method, &message, self.timeout)?;
        if let Some(error) = reply.get("error") {
            return Err(McpError::Rpc {
                server: self.server.clone(),
                method: method.to_string(),
                code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: match error.get("message").and_then(Value::as_str) {
                    Some(m) => m.to_string(),
                    None => error.to_string(),
                },
                data: error.get("data").cloned(),
            });
        }
        match reply.get_mut("result") {
            Some(result) => Ok(result.take()),
            None => Err(self.malformed(method, format!("neither `result` nor `error` in {reply}"))),
        }
    }

    /// Every tool the server offers, following `nextCursor` page by page.
    pub fn list_tools(&mut self) -> Result<Vec<McpTool>, McpError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        loop {
            let params = cursor.as_ref().map(|c| json!({ "cursor": c }));
            let page = self.request("tools/list", params)?;
            let listed = page.get("tools").cloned().unwrap_or(Value::Null);
            let listed: Vec<McpTool> = serde_json::from_value(listed)
                .map_err(|e| self.malformed("tools/list", format!("`tools` is not a list of tools: {e}")))?;
            tools.extend(listed);
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => {
                    if !seen.insert(next.to_string()) {
                        return Err(self.malformed("tools/list", format!("cursor `{next}` came back twice")));
                    }
                    cursor = Some(next.to_string());
                }
                _ => return Ok(tools),
            }
        }
    }

    /// Call tool `name` with `arguments` (a JSON object). A tool that fails
    /// returns `Ok` with `is_error` set; see [`CallToolResult::into_text`].
    pub fn call_tool(&mut self, name: &str, arguments: Value) -> Result<CallToolResult, McpError> {
        let result = self.request("tools/call", Some(json!({ "name": name, "arguments": arguments })))?;
        serde_json::from_value(result).map_err(|e| self.malformed("tools/call", format!("not a tool result: {e}")))
    }

    /// Call a tool and require success: its text, or [`McpError::Tool`]
    /// carrying the text of the failure.
    pub fn call_tool_text(&mut self, name: &str, arguments: Value) -> Result<String, McpError> {
        let result = self.call_tool(name, arguments)?;
        result.into_text(&self.server, name)
    }

    fn malformed(&self, method: &str, reason: String) -> McpError {
        McpError::Protocol { server: self.server.clone(), method: method.to_string(), reason }
    }
}

impl CallToolResult {
    /// The text of a successful result, or [`McpError::Tool`] naming
    /// `server` and `tool` when the tool reported `isError`.
    pub fn into_text(self, server: &str, tool: &str) -> Result<String, McpError> {
        let text = self.text();
        if self.is_error {
            Err(McpError::Tool { server: server.to_string(), tool: tool.to_string(), message: text })
        } else {
            Ok(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_becomes_a_tool_spec_with_its_input_schema() {
        let tool: McpTool = serde_json::from_value(json!({
            "name": "add",
            "description": "Add two numbers.",
            "inputSchema": { "type": "object", "properties": { "a": { "type": "number" } }, "required": ["a"] }
        }))
        .unwrap();
        let spec = tool.to_spec();
        assert_eq!(spec.name, "add");
        assert_eq!(spec.description, "Add two numbers.");
        assert_eq!(spec.parameters["required"], json!(["a"]));
        let bare: McpTool = serde_json::from_value(json!({ "name": "ping", "title": "Ping it" })).unwrap();
        assert_eq!(bare.to_spec().description, "Ping it");
        assert_eq!(bare.to_spec().parameters["type"], "object");
    }

    #[test]
    fn results_render_every_kind_of_content_as_text() {
        let result: CallToolResult = serde_json::from_value(json!({
            "content": [
                { "type": "text", "text": "hello" },
                { "type": "image", "data": "AAAA", "mimeType": "image/png" },
                { "type": "resource", "resource": { "uri": "file:///a", "text": "inside" } },
                { "type": "resource_link", "uri": "file:///b", "name": "b" }
            ]
        }))
        .unwrap();
        assert_eq!(result.text(), "hello\n[image image/png]\ninside\n[resource link file:///b]");
        let structured: CallToolResult =
            serde_json::from_value(json!({ "structuredContent": { "n": 1 }, "isError": true })).unwrap();
        assert_eq!(structured.text(), r#"{"n":1}"#);
        let err = structured.into_text("srv", "count").unwrap_err().to_string();
        assert_eq!(err, r#"MCP tool `count` on server `srv` returned an error: {"n":1}"#);
    }

    #[test]
    fn errors_name_the_server_and_show_the_stderr_tail() {
        let e = McpError::Exited {
            server: "/bin/srv --x".into(),
            method: "tools/call".into(),
            status: "exit status: 3".into(),
            stderr: "Traceback\nValueError: boom\n".into(),
        };
        assert_eq!(
            e.to_string(),
            "MCP server `/bin/srv --x` exited during `tools/call` (exit status: 3); the end of its stderr:\nTraceback\nValueError: boom"
        );
        let t = McpError::Timeout {
            server: "s".into(),
            method: "initialize".into(),
            after: Duration::from_millis(1500),
            stderr: String::new(),
        };
        assert_eq!(t.to_string(), "MCP server `s` did not answer `initialize` within 1.5s");
    }
}
