//! The MCP client and the `tau2-mock` environment, against the real
//! `tau2-mock-mcp-eval` server in the project's `.venv` (`make tau2`), plus
//! the streamable-HTTP transport against a small loopback server.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kiln::chat::ToolCall;
use kiln::env::tau2::{Tau2Env, Tau2Suite, PACKAGE, SERVER_SCRIPT, STATE_DIR_VAR};
use kiln::env::{EnvError, Environment, Split, Suite};
use kiln::mcp::{McpClient, McpError, McpTools, ServerCommand};
use serde_json::{json, Value};
use sha2::Digest;

const TIMEOUT: Duration = Duration::from_secs(20);

fn venv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join(".venv")
}

/// The suite, built once per test binary; a missing install says `make tau2`.
fn suite() -> &'static Tau2Suite {
    static SUITE: OnceLock<Tau2Suite> = OnceLock::new();
    SUITE.get_or_init(|| match Tau2Suite::from_venv(&venv()) {
        Ok(suite) => suite,
        Err(e) => panic!("{e}\n(these tests need {PACKAGE} in {}: run `make tau2`)", venv().display()),
    })
}

fn env() -> Tau2Env {
    suite().env().expect("start a tau2 mock server")
}

fn gradable() -> Vec<String> {
    let mut all = suite().tasks(Split::Train);
    all.extend(suite().tasks(Split::Test));
    all
}

/// The real server on its own, with a throwaway state directory.
fn raw_server(state: &Path) -> McpClient {
    let _ = suite(); // fail with the install hint first
    McpClient::spawn(&ServerCommand::new(venv().join(SERVER_SCRIPT)).env(STATE_DIR_VAR, state), TIMEOUT)
        .expect("start the real server")
}

fn call(name: &str, args: Value) -> ToolCall {
    ToolCall { id: "t".into(), name: name.into(), arguments: args.to_string() }
}

#[test]
fn tools_list_returns_the_business_tools_and_the_env_hides_the_state_key() {
    let state = tempfile::tempdir().unwrap();
    let mut client = raw_server(state.path());
    assert_eq!(client.info().name, "tau2-mock-mcp-eval");
    assert_eq!(client.info().protocol_version, "2025-06-18");
    let names: BTreeSet<String> = client.list_tools().unwrap().into_iter().map(|t| t.name).collect();
    let business = [
        "check_notifications",
        "create_task",
        "dismiss_notification",
        "get_users",
        "transfer_to_human_agents",
        "update_task_status",
    ];
    let mut expected: BTreeSet<String> = business.iter().map(|s| s.to_string()).collect();
    expected.extend(["reset_state".to_string(), "get_call_log".to_string()]);
    assert_eq!(names, expected);

    let mut env = env();
    let start = env.reset("tau2-mock/create_task_1", 0).unwrap();
    let offered: BTreeSet<&str> = start.tools.iter().map(|t| t.name.as_str()).collect();
    let mut wanted: BTreeSet<&str> = business.into_iter().collect();
    wanted.extend(["respond", "done"]);
    assert_eq!(offered, wanted);
    for tool in &start.tools {
        assert!(tool.parameters["properties"].get("state_key").is_none(), "{} shows state_key", tool.name);
    }
    let create = start.tools.iter().find(|t| t.name == "create_task").unwrap();
    assert_eq!(create.parameters["required"], json!(["user_id", "title"]));
    assert!(start.prompt.starts_with("Goal: User needs to create a task for an upcoming meeting."), "{}", start.prompt);
}

#[test]
fn the_splits_hold_the_gradable_tasks_and_say_why_the_others_are_out() {
    let train = suite().tasks(Split::Train);
    let test = suite().tasks(Split::Test);
    assert_eq!((train.len(), test.len()), (6, 2), "train {train:?} test {test:?}");
    assert_eq!(test, vec!["tau2-mock/update_task_1", "tau2-mock/update_task_with_initialization_actions"]);
    let out: Vec<(&str, &str)> = suite().left_out().iter().map(|(id, why)| (id.as_str(), why.as_str())).collect();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0], ("create_task_1_nl_eval", "its only criteria are NL assertions, which need an LLM judge"));
    assert_eq!(out[1].0, "update_task_with_user_tools");
    assert!(out[1].1.starts_with("its criteria contradict each other"), "{}", out[1].1);
    assert!(out[1].1.contains("assert_notification_status"), "{}", out[1].1);

    let mut env = env();
    match env.reset("tau2-mock/create_task_1_nl_eval", 0) {
        Err(EnvError::Broken { reason, .. }) => assert!(reason.contains("LLM judge"), "{reason}"),
        other => panic!("{:?}", other.map(|s| s.prompt)),
    }
    match env.reset("tau2-mock/no_such_task", 0) {
        Err(EnvError::UnknownTask { env, task }) => {
            assert_eq!((env.as_str(), task.as_str()), ("tau2-mock", "tau2-mock/no_such_task"))
        }
        other => panic!("{:?}", other.map(|s| s.prompt)),
    }
}

#[test]
fn an_oracle_agent_scores_one_on_every_gradable_task() {
    let mut env = env();
    for task in gradable() {
        env.reset(&task, 7).unwrap();
        for c in suite().oracle(&task).unwrap() {
            let obs = env.step(&c).unwrap();
            assert!(!obs.is_error, "{task}: {} -> {}", c.name, obs.content);
        }
        assert!(env.done(), "{task}: `done` ends the task");
        let grade = env.grade().unwrap();
        assert!(!grade.checks.is_empty(), "{task}: nothing was checked");
        let score = env.score();
        assert!(score.success && score.reward == 1.0, "{task}: {grade:#?}");
    }
}

#[test]
fn a_do_nothing_agent_scores_zero_and_the_db_changing_tasks_are_most_of_them() {
    let mut env = env();
    let mut db_changing = 0;
    for task in gradable() {
        env.reset(&task, 0).unwrap();
        db_changing += usize::from(env.gold_changes_db());
        let score = env.score();
        assert_eq!(score.reward, 0.0, "{task}: {:#?}", env.grade().unwrap());
        assert!(!score.success);
    }
    assert_eq!(db_changing, 6, "the gold solutions of six gradable tasks change the database");
}

#[test]
fn a_wrong_write_fails_the_db_check_and_the_agent_cannot_reach_the_gold_namespace() {
    let mut env = env();
    env.reset("tau2-mock/create_task_1", 0).unwrap();
    // The injected key wins over one the agent writes itself.
    let sneaky =
        json!({ "user_id": "user_1", "title": "Important meeting", "state_key": "tau2/mock/create_task_1/gold" });
    let obs = env.step(&call("create_task", sneaky)).unwrap();
    assert!(!obs.is_error, "{}", obs.content);
    assert!(obs.content.contains("\"task_2\""), "tau2's tool message, not the MCP envelope: {}", obs.content);
    assert!(!obs.content.contains("state_key"), "{}", obs.content);
    let grade = env.grade().unwrap();
    assert_eq!(env.score().reward, 0.0);
    assert!(grade.checks[0].detail.contains("tasks.task_2.title"), "{grade:#?}");

    let bad = env.step(&call("update_task_status", json!({ "task_id": "task_99", "status": "completed" }))).unwrap();
    assert!(bad.is_error && bad.content == "Error: Task task_99 not found", "{bad:?}");
    let unknown = env.step(&call("delete_task", json!({}))).unwrap();
    assert!(unknown.is_error && unknown.content.contains("unknown tool `delete_task`"), "{unknown:?}");
    let malformed =
        env.step(&ToolCall { id: "m".into(), name: "create_task".into(), arguments: "{title:".into() }).unwrap();
    assert!(malformed.is_error && malformed.content.contains("not valid JSON"), "{malformed:?}");
}

#[test]
fn required_statements_count_from_respond_and_from_the_final_answer() {
    let task = "tau2-mock/update_task_with_initialization_data";
    let gold_only: Vec<ToolCall> =
        suite().oracle(task).unwrap().into_iter().filter(|c| c.name != "respond" && c.name != "done").collect();
    assert_eq!(gold_only.len(), 1);

    let mut env = env();
    let start = env.reset(task, 0).unwrap();
    assert!(start.prompt.starts_with("Goal: User needs to update the status of task_2 to completed."));
    env.step(&gold_only[0]).unwrap();
    let grade = env.grade().unwrap();
    assert!(grade.checks.iter().any(|c| c.criterion == "DB" && c.passed), "{grade:#?}");
    assert_eq!(env.score().reward, 0.0, "the statements are still missing");
    env.record_answer("The agent acknowledged the previous context, and the agent confirmed the task status was updated successfully.");
    assert_eq!(env.score().reward, 1.0, "{:#?}", env.grade().unwrap());
    assert!(!env.done(), "a text answer does not end the episode by itself; the loop does");
}

#[test]
fn the_prior_conversation_is_in_the_prompt() {
    let mut env = env();
    let start = env.reset("tau2-mock/update_task_with_message_history", 0).unwrap();
    assert!(start
        .prompt
        .contains("\nThe conversation so far:\nuser: I need to create a task for the project review meeting.\n"));
    assert!(start.prompt.contains("assistant called create_task {"), "{}", start.prompt);
    assert!(start.prompt.contains("task_2"), "{}", start.prompt);
}

#[test]
fn same_task_and_seed_give_the_same_observations() {
    let transcript = |seed| {
        let mut env = env();
        let mut out = vec![env.reset("tau2-mock/update_task_with_initialization_actions", seed).unwrap().prompt];
        for c in [
            call("get_users", json!({})),
            call("update_task_status", json!({ "task_id": "task_2", "status": "completed" })),
            call("check_notifications", json!({})),
            call("create_task", json!({ "user_id": "nobody", "title": "x" })),
        ] {
            out.push(env.step(&c).unwrap().content);
        }
        out
    };
    assert_eq!(transcript(3), transcript(3));
}

#[test]
fn json_rpc_errors_and_tool_errors_carry_the_servers_message() {
    let state = tempfile::tempdir().unwrap();
    let mut client = raw_server(state.path());
    let server = client.server().to_string();
    match client.request("resources/list", None) {
        Err(e @ McpError::Rpc { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&format!("`{server}`")), "{text}");
            assert!(
                text.ends_with(
                    "answered `resources/list` with JSON-RPC error -32601: method not found: resources/list"
                ),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    let err = client
        .call_tool_text(
            "update_task_status",
            json!({ "task_id": "task_9", "status": "x", "state_key": "tau2/mock/t/agent" }),
        )
        .unwrap_err();
    assert!(matches!(err, McpError::Tool { .. }), "{err:?}");
    assert!(err.to_string().contains("Task task_9 not found"), "{err}");

    // McpTools turns tool errors into observations and refuses bad calls itself.
    let mut tools = McpTools::new(client).unwrap().exclude(&["reset_state"]);
    assert!(!tools.contains("reset_state") && tools.contains("get_users"));
    let obs = tools.call("update_task_status", r#"{"task_id": "task_9", "status": "x"}"#).unwrap();
    assert!(obs.is_error && obs.content.contains("Task task_9 not found"), "{obs:?}");
    let obs = tools.call("get_users", "").unwrap();
    assert!(!obs.is_error && obs.content.contains("user_1"), "{obs:?}");
    assert!(tools.call("get_users", "[1]").unwrap().content.contains("must be a JSON object"));
    assert!(tools.call("reset_state", "{}").unwrap().content.contains("unknown tool `reset_state`"));
}

#[test]
fn a_venv_without_the_package_says_to_run_make_tau2() {
    let empty = tempfile::tempdir().unwrap();
    let err = Tau2Suite::from_venv(empty.path()).err().expect("an empty venv has no server");
    let text = err.to_string();
    assert!(text.starts_with("environment `tau2-mock`: tau2-mock-mcp-eval 0.4.0 is not installed in `"), "{text}");
    assert!(text.ends_with("; run `make tau2`"), "{text}");
}

#[test]
fn a_server_that_cannot_start_is_named() {
    let err = McpClient::spawn(&ServerCommand::new("/nonexistent/mcp-server").arg("--stdio"), TIMEOUT).unwrap_err();
    assert!(matches!(err, McpError::Start { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with("MCP server `/nonexistent/mcp-server --stdio` failed to start: "), "{text}");
    assert!(text.contains("No such file or directory"), "{text}");
}

/// A fake stdio server: answers `initialize`, then exits on the next request.
const FLAKY: &str = r#"read -r line
echo '{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"flaky","version":"0"}}}'
read -r line
read -r line
echo 'Traceback: something broke' >&2
echo 'RuntimeError: crashing on purpose' >&2
exit 3"#;

#[test]
fn a_server_that_exits_mid_session_is_named_with_its_status_and_stderr() {
    let mut client = McpClient::spawn(&ServerCommand::new("sh").arg("-c").arg(FLAKY), TIMEOUT).unwrap();
    assert_eq!(client.info().name, "flaky");
    let err = client.list_tools().unwrap_err();
    assert!(matches!(err, McpError::Exited { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with("MCP server `sh -c read -r line"), "{text}");
    assert!(text.contains("exited during `tools/list` (exit status: 3)"), "{text}");
    assert!(text.ends_with("Traceback: something broke\nRuntimeError: crashing on purpose"), "{text}");
    // Later calls report the same, rather than hanging.
    let again = client.call_tool("x", json!({})).unwrap_err();
    assert!(matches!(again, McpError::Exited { .. }), "{again:?}");
}

#[test]
fn a_server_that_never_answers_times_out_and_its_process_group_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("helper.pid");
    let script = format!("sleep 600 & echo $! > '{}'; read -r line; wait", pidfile.display());
    let err = McpClient::spawn(&ServerCommand::new("sh").arg("-c").arg(&script), Duration::from_secs(2)).unwrap_err();
    assert!(matches!(err, McpError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("did not answer `initialize` within 2.0s"), "{err}");
    // The client is gone, and with it the server's whole process group,
    // the helper it forked included.
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_string();
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let mut gone = false;
    for _ in 0..500 {
        let state = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
        // Gone, or a zombie waiting to be reaped: either way, not running.
        if state.is_empty() || state.split_whitespace().nth(2) == Some("Z") {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(gone, "the forked helper {pid} survived the client");
}

#[test]
fn the_environment_removes_its_state_directory() {
    let mut env = env();
    env.reset("tau2-mock/create_task_1", 0).unwrap();
    let dir = env.state_dir().to_path_buf();
    assert!(dir.join(format!("{:x}.json", sha2::Sha256::digest(b"tau2/mock/create_task_1/agent"))).is_file());
    drop(env);
    assert!(!dir.exists(), "{} was left behind", dir.display());
}

// ---- streamable HTTP, against a loopback server written here ----

/// What the fake server saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    verb: String,
    method: String,
    session: Option<String>,
    version: Option<String>,
    accept: String,
}

mod fake_http {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};

    /// Start the server on a loopback port in a thread of its own; returns its URL.
    pub fn start(seen: Arc<Mutex<Vec<Seen>>>) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((socket, _)) = listener.accept().await else { return };
                    tokio::spawn(connection(socket, Arc::clone(&seen)));
                }
            });
        });
        url
    }

    async fn connection(socket: TcpStream, seen: Arc<Mutex<Vec<Seen>>>) {
        let mut socket = BufReader::new(socket);
        loop {
            let mut request_line = String::new();
            if socket.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                return;
            }
            let verb = request_line.split_whitespace().next().unwrap_or("").to_string();
            let mut headers = std::collections::HashMap::new();
            loop {
                let mut line = String::new();
                socket.read_line(&mut line).await.unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (k, v) = line.split_once(':').unwrap();
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
            let length: usize = headers.get("content-length").map_or(0, |v| v.parse().unwrap());
            let mut body = vec![0; length];
            socket.read_exact(&mut body).await.unwrap();
            let message: Value = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap() };
            let method = message.get("method").and_then(Value::as_str).unwrap_or("").to_string();
            seen.lock().unwrap().push(Seen {
                verb: verb.clone(),
                method: method.clone(),
                session: headers.get("mcp-session-id").cloned(),
                version: headers.get("mcp-protocol-version").cloned(),
                accept: headers.get("accept").cloned().unwrap_or_default(),
            });
            let id = message.get("id").cloned().unwrap_or(Value::Null);
            let ok = |result: Value| json!({ "jsonrpc": "2.0", "id": id, "result": result });
            let stream = socket.get_mut();
            match (verb.as_str(), method.as_str()) {
                ("DELETE", _) => reply(stream, "200 OK", "text/plain", "", "").await,
                (_, "initialize") => {
                    let result = ok(json!({
                        "protocolVersion": "2025-06-18",
                        "capabilities": { "tools": {} },
                        "serverInfo": { "name": "fake-http", "version": "1.0" }
                    }));
                    reply(stream, "200 OK", "application/json", "Mcp-Session-Id: sess-1\r\n", &result.to_string()).await
                }
                (_, "notifications/initialized") => reply(stream, "202 Accepted", "text/plain", "", "").await,
                (_, "tools/list") if message["params"]["cursor"].is_null() => {
                    // SSE: a progress notification first, then the page, pretty-printed over many data lines.
                    let page = ok(json!({
                        "tools": [{ "name": "echo", "description": "Echo the text.",
                                    "inputSchema": { "type": "object", "properties": { "text": { "type": "string" } } } }],
                        "nextCursor": "page-2"
                    }));
                    let data: String =
                        serde_json::to_string_pretty(&page).unwrap().lines().map(|l| format!("data: {l}\n")).collect();
                    let events = format!(
                        ": hello\nevent: message\ndata: {}\n\nevent: message\nid: 1\n{data}\n",
                        json!({ "jsonrpc": "2.0", "method": "notifications/progress", "params": { "progress": 1 } })
                    );
                    reply(stream, "200 OK", "text/event-stream", "", &events).await
                }
                (_, "tools/list") => {
                    let page = ok(json!({ "tools": [{ "name": "fail", "inputSchema": { "type": "object" } }] }));
                    reply(stream, "200 OK", "application/json", "", &page.to_string()).await
                }
                (_, "tools/call") if message["params"]["name"] == "echo" => {
                    // An event stream that stays open after the reply: the client must not wait for its end.
                    let text = message["params"]["arguments"]["text"].as_str().unwrap_or("").to_string();
                    let result = ok(json!({ "content": [{ "type": "text", "text": format!("echo: {text}") }] }));
                    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n";
                    stream.write_all(head.as_bytes()).await.unwrap();
                    stream.write_all(format!("data: {result}\n\n").as_bytes()).await.unwrap();
                    stream.flush().await.unwrap();
                    let mut sink = [0u8; 64];
                    while stream.read(&mut sink).await.unwrap_or(0) > 0 {}
                    return;
                }
                (_, "tools/call") => {
                    let error = json!({ "jsonrpc": "2.0", "id": id, "error": { "code": -32000, "message": "fail always fails" } });
                    reply(stream, "200 OK", "application/json", "", &error.to_string()).await
                }
                _ => reply(stream, "400 Bad Request", "text/plain", "", "unexpected").await,
            }
        }
    }

    async fn reply(stream: &mut TcpStream, status: &str, content_type: &str, extra: &str, body: &str) {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body.as_bytes()).await.unwrap();
        stream.flush().await.unwrap();
    }
}

#[test]
fn streamable_http_speaks_json_and_sse_and_carries_the_session() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let url = fake_http::start(Arc::clone(&seen));
    let mut client = McpClient::connect_http(&url, TIMEOUT).unwrap();
    assert_eq!(client.info().name, "fake-http");
    assert_eq!(client.server(), url);

    let tools = client.list_tools().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["echo", "fail"], "both pages, in order");
    assert_eq!(tools[0].to_spec().parameters["properties"]["text"]["type"], "string");

    let echoed = client.call_tool_text("echo", json!({ "text": "hi" })).unwrap();
    assert_eq!(echoed, "echo: hi");
    let err = client.call_tool("fail", json!({})).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("MCP server `{url}` answered `tools/call` with JSON-RPC error -32000: fail always fails")
    );
    drop(client);

    let seen = seen.lock().unwrap().clone();
    let methods: Vec<&str> =
        seen.iter().map(|s| if s.verb == "DELETE" { "DELETE" } else { s.method.as_str() }).collect();
    assert_eq!(
        methods,
        ["initialize", "notifications/initialized", "tools/list", "tools/list", "tools/call", "tools/call", "DELETE"]
    );
    assert!(seen[0].session.is_none() && seen[0].version.is_none());
    for s in &seen[1..] {
        assert_eq!(s.session.as_deref(), Some("sess-1"), "{s:?}");
        assert_eq!(s.version.as_deref(), Some("2025-06-18"), "{s:?}");
    }
    for s in seen.iter().filter(|s| s.verb == "POST") {
        assert!(s.accept.contains("application/json") && s.accept.contains("text/event-stream"), "{s:?}");
    }
}

#[test]
fn an_http_server_that_is_not_there_is_named() {
    // Bind and drop a port so nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let err = McpClient::connect_http(&url, TIMEOUT).unwrap_err();
    assert!(matches!(err, McpError::Http { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!("MCP server `{url}`: the HTTP request for `initialize` failed: ")),
        "{err}"
    );
}
