//! The bridge's child process: spawn, one request and one reply at a time
//! under a timeout, and a clean kill.
//!
//! Design choices:
//! - Two reader threads own the child's stdout and stderr. Stdout lines go
//!   through a channel, so a read is `recv_timeout` and a bridge that hangs
//!   costs exactly its timeout. Stderr is drained into a ring of the last
//!   [`STDERR_LINES`] lines, which every failure message quotes: the
//!   traceback of a crashed bridge is usually the whole story.
//! - The child gets its own process group, and every kill is aimed at the
//!   group, so helpers it started (the JVM of TextWorldExpress) die with it.
//! - Any failure (exit, timeout, a line that is not protocol JSON) kills the
//!   process: after it, nobody knows what state the bridge is in. A
//!   well-formed refusal (`ok: false`) is not a failure of the process.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::protocol::{parse_hello, parse_reply, Hello, Reply, Request};

/// How many stderr lines failure messages quote.
pub const STDERR_LINES: usize = 40;
/// The longest stdout line accepted; a longer one is a broken bridge.
const MAX_LINE_BYTES: usize = 16 << 20;
/// The longest stderr line kept (the rest is cut).
const MAX_STDERR_LINE_CHARS: usize = 400;
/// How long a failure waits for the process to exit or stderr to close.
const GRACE: Duration = Duration::from_secs(2);
/// How often a wait for a reply checks that the bridge is still alive.
const POLL: Duration = Duration::from_millis(100);

/// How to start a bridge: a program, its arguments, and extra environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// The program: a Python interpreter, or the bridge itself.
    pub program: PathBuf,
    /// The arguments, usually the bridge script and its options.
    pub args: Vec<String>,
    /// Extra environment variables for the child.
    pub vars: Vec<(String, String)>,
}

impl Launch {
    /// How failure messages name the bridge: the script (first argument) if
    /// there is one, else the program.
    pub fn describe(&self) -> String {
        match self.args.first() {
            Some(script) => script.clone(),
            None => self.program.display().to_string(),
        }
    }
}

/// Per-request time limits. Reset has the longest: a bridge may start its
/// engine (a JVM) on the first reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// For the hello line, and for `tasks` and `close`.
    pub hello: Duration,
    pub reset: Duration,
    /// For `step` and the extra ops.
    pub step: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { hello: Duration::from_secs(60), reset: Duration::from_secs(120), step: Duration::from_secs(30) }
    }
}

impl Timeouts {
    /// The same limit for everything (tests use short ones).
    pub fn uniform(limit: Duration) -> Timeouts {
        Timeouts { hello: limit, reset: limit, step: limit }
    }

    fn for_request(&self, request: &Request) -> Duration {
        match request {
            Request::Reset { .. } => self.reset,
            Request::Step { .. } | Request::Extra { .. } => self.step,
            Request::Tasks { .. } | Request::Close => self.hello,
        }
    }
}

/// Why a request got no usable reply.
#[derive(Debug)]
pub enum Failure {
    /// The process is gone or unusable; the message completes "the bridge ...".
    Died(String),
    /// The bridge answered `ok: false` with this message; it is still running.
    Refused(String),
}

enum Line {
    Text(String),
    Eof,
    Unreadable(String),
}

#[derive(Default)]
struct StderrState {
    lines: VecDeque<String>,
    closed: bool,
}

/// The last lines of the child's stderr, and whether it has closed.
#[derive(Default)]
struct StderrTail {
    state: Mutex<StderrState>,
    changed: Condvar,
}

impl StderrTail {
    fn push(&self, line: String) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.lines.len() == STDERR_LINES {
            state.lines.pop_front();
        }
        state.lines.push_back(line);
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.changed.notify_all();
    }

    /// The kept lines, after waiting up to `grace` for stderr to close.
    fn lines_after(&self, grace: Duration) -> Vec<String> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (state, _) =
            self.changed.wait_timeout_while(state, grace, |s| !s.closed).unwrap_or_else(|e| e.into_inner());
        state.lines.iter().cloned().collect()
    }
}

/// A running bridge that has said hello.
pub struct BridgeProcess {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<Line>,
    stderr: Arc<StderrTail>,
    label: String,
    /// Set once the process is known dead (and reaped).
    status: Option<ExitStatus>,
}

impl BridgeProcess {
    /// Start the bridge and read its hello line.
    pub fn spawn(launch: &Launch, timeouts: &Timeouts) -> Result<(BridgeProcess, Hello), String> {
        let label = launch.describe();
        let mut command = Command::new(&launch.program);
        command
            .args(&launch.args)
            .envs(launch.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().map_err(|err| {
            format!("bridge `{label}` could not be started: `{}` failed to run ({err})", launch.program.display())
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            unreachable!("all three streams are piped")
        };

        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut buf = Vec::new();
                let line = match (&mut reader).take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut buf) {
                    Ok(0) => Line::Eof,
                    Ok(_) if buf.len() > MAX_LINE_BYTES => {
                        Line::Unreadable(format!("printed a line longer than {} MiB", MAX_LINE_BYTES >> 20))
                    }
                    Ok(_) => match String::from_utf8(buf) {
                        Ok(text) => Line::Text(text.trim_end_matches(['\n', '\r']).to_string()),
                        Err(_) => Line::Unreadable("printed a line that is not UTF-8".to_string()),
                    },
                    Err(err) => Line::Unreadable(format!("could not be read from ({err})")),
                };
                let last = !matches!(line, Line::Text(_));
                if sender.send(line).is_err() || last {
                    break;
                }
            }
        });
        let tail = Arc::new(StderrTail::default());
        let writer = Arc::clone(&tail);
        thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&buf);
                        let text = text.trim_end();
                        let kept: String = text.chars().take(MAX_STDERR_LINE_CHARS).collect();
                        writer.push(if kept.len() < text.len() { format!("{kept}…") } else { kept });
                    }
                }
            }
            writer.close();
        });

        let mut process = BridgeProcess { child, stdin, lines, stderr: tail, label, status: None };
        let line = process.read_line(timeouts.hello, "its hello line").map_err(|f| process.describe(f))?;
        match parse_hello(&line) {
            Ok(hello) => Ok((process, hello)),
            Err(why) => {
                let reason = process.kill_and_explain(&why);
                Err(reason)
            }
        }
    }

    /// Send `request` and wait for its reply, at most the request's timeout.
    pub fn request(
        &mut self,
        request: &Request,
        timeouts: &Timeouts,
    ) -> Result<serde_json::Map<String, serde_json::Value>, Failure> {
        let op = request.op().to_string();
        if let Some(status) = self.status {
            return Err(Failure::Died(format!("bridge `{}` is no longer running ({status})", self.label)));
        }
        let line = request.to_line() + "\n";
        if let Err(err) = self.stdin.write_all(line.as_bytes()).and_then(|()| self.stdin.flush()) {
            return Err(Failure::Died(
                self.kill_and_explain(&format!("stopped reading requests (writing `{op}` failed: {err})")),
            ));
        }
        let reply = self.read_line(timeouts.for_request(request), &format!("its reply to `{op}`"))?;
        match parse_reply(&reply, &op) {
            Ok(Reply::Ok(fields)) => Ok(fields),
            Ok(Reply::Refused(error)) => Err(Failure::Refused(error)),
            Err(why) => Err(Failure::Died(self.kill_and_explain(&why))),
        }
    }

    /// The next stdout line, or the process's death explained. The child is
    /// polled while waiting: a bridge that exits while a helper it started
    /// still holds its stdout open is reported as exited, not as hung.
    fn read_line(&mut self, timeout: Duration, waiting_for: &str) -> Result<String, Failure> {
        let deadline = Instant::now() + timeout;
        let mut exited = false;
        loop {
            let now = Instant::now();
            let slice = POLL.min(deadline.saturating_duration_since(now));
            let received = self.lines.recv_timeout(slice);
            match received {
                Ok(Line::Text(text)) => return Ok(text),
                Ok(Line::Unreadable(why)) => return Err(Failure::Died(self.kill_and_explain(&why))),
                Ok(Line::Eof) | Err(RecvTimeoutError::Disconnected) => return Err(self.exited(waiting_for)),
                Err(RecvTimeoutError::Timeout) if exited => return Err(self.exited(waiting_for)),
                Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                    return Err(Failure::Died(self.kill_and_explain(&format!(
                        "did not send {waiting_for} within {}; kiln killed it",
                        seconds(timeout)
                    ))))
                }
                // One more slice for a reply that may still be in the pipe.
                Err(RecvTimeoutError::Timeout) => exited = self.wait_for_exit(Duration::ZERO).is_some(),
            }
        }
    }

    fn exited(&mut self, waiting_for: &str) -> Failure {
        let how = match self.wait_for_exit(GRACE) {
            Some(status) => format!("exited ({status})"),
            None => "closed its stdout".to_string(),
        };
        Failure::Died(self.kill_and_explain(&format!("{how} while kiln waited for {waiting_for}")))
    }

    fn describe(&mut self, failure: Failure) -> String {
        match failure {
            Failure::Died(reason) => reason,
            Failure::Refused(error) => self.kill_and_explain(&format!("refused: {error}")),
        }
    }

    /// Kill the process group and explain: "bridge `x.py` <what>", then the
    /// stderr tail.
    fn kill_and_explain(&mut self, what: &str) -> String {
        self.kill();
        let tail = self.stderr.lines_after(GRACE);
        let mut reason = format!("bridge `{}` {what}", self.label);
        if tail.is_empty() {
            reason.push_str(" (it wrote nothing to stderr)");
        } else {
            reason.push_str(&format!("\nlast {} line(s) of its stderr:", tail.len()));
            for line in tail {
                reason.push_str("\n  | ");
                reason.push_str(&line);
            }
        }
        reason
    }

    /// The exit status, if the process exits within `grace`.
    fn wait_for_exit(&mut self, grace: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.status {
                return Some(status);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL the whole process group, then reap the child.
    fn kill(&mut self) {
        #[cfg(unix)]
        if let Ok(group) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) with a negative pid signals that process group;
            // the group id is our child's pid, set by `process_group(0)`.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        if self.status.is_none() {
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.status = Some(status);
            }
        }
    }

    /// Whether the process has been found dead.
    pub fn is_dead(&self) -> bool {
        self.status.is_some()
    }

    /// Say `close`, give the bridge a moment to exit, then kill its group.
    fn close(&mut self) {
        if self.status.is_none() {
            let _ =
                self.stdin.write_all((Request::Close.to_line() + "\n").as_bytes()).and_then(|()| self.stdin.flush());
            self.wait_for_exit(Duration::from_millis(500));
        }
        self.kill();
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        self.close();
    }
}

fn seconds(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs >= 1.0 && secs.fract() == 0.0 {
        format!("{secs:.0} s")
    } else {
        format!("{secs:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stderr_tail_keeps_the_last_lines() {
        let tail = StderrTail::default();
        for i in 0..100 {
            tail.push(format!("line {i}"));
        }
        tail.close();
        let lines = tail.lines_after(Duration::ZERO);
        assert_eq!(lines.len(), STDERR_LINES);
        assert_eq!(lines.first().map(String::as_str), Some("line 60"));
        assert_eq!(lines.last().map(String::as_str), Some("line 99"));
    }

    #[test]
    fn a_missing_program_is_named() {
        let launch = Launch { program: "/nonexistent/kiln-python".into(), args: vec!["b.py".into()], vars: vec![] };
        let Err(reason) = BridgeProcess::spawn(&launch, &Timeouts::default()) else { panic!("spawned") };
        assert!(
            reason.contains("bridge `b.py` could not be started") && reason.contains("/nonexistent/kiln-python"),
            "{reason}"
        );
    }

    #[test]
    fn a_program_that_exits_at_once_is_explained_with_its_stderr() {
        let launch = Launch {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "echo 'no venv here' >&2; exit 3".into()],
            vars: vec![],
        };
        let Err(reason) = BridgeProcess::spawn(&launch, &Timeouts::default()) else { panic!("spawned") };
        assert!(reason.contains("exited (exit status: 3) while kiln waited for its hello line"), "{reason}");
        assert!(reason.contains("| no venv here"), "{reason}");
    }

    #[test]
    fn timeouts_are_written_for_people() {
        assert_eq!(seconds(Duration::from_secs(30)), "30 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
    }
}
