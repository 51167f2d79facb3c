//! The stdio transport: a child process, one JSON-RPC message per line.
//!
//! A reader thread turns the child's stdout into parsed messages on a
//! channel, so every wait is a `recv_timeout` with a deadline. A second
//! thread keeps the last lines of the child's stderr for error messages.
//! The child leads its own process group, which is killed on drop.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{McpError, ServerCommand, Transport};

/// Lines of stderr kept for error messages, and their byte budget.
const STDERR_LINES: usize = 20;
const STDERR_BYTES: usize = 4096;
/// How long to wait for an exiting server's status and last stderr lines.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// What the stdout reader saw.
enum Inbound {
    Message(Value),
    /// A line that is not JSON (a stray print); kept for diagnostics.
    Noise(String),
    /// Stdout closed (the server exited or closed it).
    Closed,
}

/// The last lines a child wrote to stderr.
#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Tail {
    fn push(&mut self, line: String) {
        self.bytes += line.len();
        self.lines.push_back(line);
        while self.lines.len() > STDERR_LINES || (self.bytes > STDERR_BYTES && self.lines.len() > 1) {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len();
            }
        }
    }
    fn text(&self) -> String {
        self.lines.iter().map(|l| format!("{l}\n")).collect()
    }
}

pub(super) struct StdioTransport {
    server: String,
    child: Child,
    stdin: Option<ChildStdin>,
    inbox: Receiver<Inbound>,
    stderr: Arc<Mutex<Tail>>,
    stderr_closed: Receiver<()>,
}

impl StdioTransport {
    pub(super) fn spawn(command: &ServerCommand) -> Result<StdioTransport, McpError> {
        let server = command.display();
        let mut cmd = Command::new(&command.program);
        cmd.args(&command.args)
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(dir) = &command.cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|source| McpError::Start { server: server.clone(), source })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr_pipe = child.stderr.take().expect("stderr is piped");

        let (tx, inbox) = mpsc::channel();
        thread::Builder::new()
            .name("mcp-stdout".into())
            .spawn(move || read_stdout(stdout, tx))
            .map_err(|source| McpError::Start { server: server.clone(), source })?;
        let stderr = Arc::new(Mutex::new(Tail::default()));
        let (closed_tx, stderr_closed) = mpsc::channel();
        let tail = Arc::clone(&stderr);
        thread::Builder::new()
            .name("mcp-stderr".into())
            .spawn(move || {
                read_stderr(stderr_pipe, &tail);
                let _ = closed_tx.send(());
            })
            .map_err(|source| McpError::Start { server: server.clone(), source })?;
        Ok(StdioTransport { server, child, stdin, inbox, stderr, stderr_closed })
    }

    fn stderr_tail(&self) -> String {
        self.stderr.lock().map(|t| t.text()).unwrap_or_default()
    }

    fn send(&mut self, method: &str, message: &Value) -> Result<(), McpError> {
        let mut line = message.to_string();
        line.push('\n');
        let written = match self.stdin.as_mut() {
            Some(stdin) => stdin.write_all(line.as_bytes()).and_then(|()| stdin.flush()),
            None => Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
        };
        match written {
            Ok(()) => Ok(()),
            Err(e) => match self.exit_status() {
                Some(status) => Err(self.exited(method, status)),
                None => Err(McpError::Protocol {
                    server: self.server.clone(),
                    method: method.to_string(),
                    reason: format!("writing to its stdin failed: {e}"),
                }),
            },
        }
    }

    /// The child's exit status, waiting up to [`EXIT_GRACE`] for it; `None`
    /// if it is still running.
    fn exit_status(&mut self) -> Option<String> {
        let until = Instant::now() + EXIT_GRACE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status.to_string()),
                Ok(None) if Instant::now() < until => thread::sleep(Duration::from_millis(10)),
                Ok(None) => return None,
                Err(e) => return Some(format!("status unknown: {e}")),
            }
        }
    }

    /// The error for a server that is gone, with its last stderr lines.
    fn exited(&mut self, method: &str, status: String) -> McpError {
        // Let the stderr reader drain what the child wrote before exiting.
        let _ = self.stderr_closed.recv_timeout(EXIT_GRACE);
        McpError::Exited { server: self.server.clone(), method: method.to_string(), status, stderr: self.stderr_tail() }
    }

    /// Answer a request the server sent us: `ping` is answered, anything
    /// else is refused as unknown (this client offers no capabilities).
    fn answer_server_request(&mut self, message: &Value) {
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        let reply = match message.get("method").and_then(Value::as_str) {
            Some("ping") => json!({ "jsonrpc": "2.0", "id": id, "result": {} }),
            other => json!({
                "jsonrpc": "2.0", "id": id,
                "error": { "code": -32601, "message": format!("method not found: {}", other.unwrap_or("?")) }
            }),
        };
        let _ = self.send("(reply to a server request)", &reply);
    }
}

fn read_stdout(stdout: impl Read, tx: mpsc::Sender<Inbound>) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let inbound = match serde_json::from_str::<Value>(trimmed) {
            Ok(v) => Inbound::Message(v),
            Err(_) => Inbound::Noise(line),
        };
        if tx.send(inbound).is_err() {
            return;
        }
    }
    let _ = tx.send(Inbound::Closed);
}

fn read_stderr(stderr: impl Read, tail: &Mutex<Tail>) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                if let Ok(mut t) = tail.lock() {
                    t.push(line);
                }
            }
        }
    }
}

impl Transport for StdioTransport {
    fn request(&mut self, id: u64, method: &str, message: &Value, timeout: Duration) -> Result<Value, McpError> {
        self.send(method, message)?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.inbox.recv_timeout(left) {
                Ok(Inbound::Message(reply)) => {
                    let is_response = reply.get("result").is_some() || reply.get("error").is_some();
                    if is_response && reply.get("id") == Some(&json!(id)) {
                        return Ok(reply);
                    }
                    if !is_response && reply.get("method").is_some() && reply.get("id").is_some() {
                        self.answer_server_request(&reply);
                    }
                    // Notifications and late replies to requests that timed out are dropped.
                }
                Ok(Inbound::Noise(line)) => {
                    tracing::warn!(server = %self.server, "MCP server wrote a non-JSON line to stdout: {line}");
                }
                Ok(Inbound::Closed) | Err(RecvTimeoutError::Disconnected) => {
                    let status =
                        self.exit_status().unwrap_or_else(|| "it closed its stdout but is still running".into());
                    return Err(self.exited(method, status));
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(McpError::Timeout {
                        server: self.server.clone(),
                        method: method.to_string(),
                        after: timeout,
                        stderr: self.stderr_tail(),
                    });
                }
            }
        }
    }

    fn notify(&mut self, method: &str, message: &Value, _timeout: Duration) -> Result<(), McpError> {
        self.send(method, message)
    }
}

impl Drop for StdioTransport {
    fn drop(&mut self) {
        // Closing stdin first lets a well-behaved server see EOF; the kill
        // makes sure the whole group goes, helpers included.
        self.stdin = None;
        if let Ok(None) = self.child.try_wait() {
            let group = self.child.id() as libc::pid_t;
            // SAFETY: kill(2) with a negative pid signals the process group the
            // child leads (it was spawned with process_group(0)); no memory is involved.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stderr_tail_keeps_the_last_lines_within_budget() {
        let mut tail = Tail::default();
        for i in 0..50 {
            tail.push(format!("line {i}"));
        }
        let text = tail.text();
        assert!(text.starts_with("line 30\n") && text.ends_with("line 49\n"), "{text}");
        tail.push("x".repeat(STDERR_BYTES * 2));
        assert_eq!(tail.lines.len(), 1, "one oversized line is still kept");
    }
}
