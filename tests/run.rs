//! End to end over the real `kiln` binary: a run with traces, replay of a
//! recorded processor (100% identical), determinism, a mid-task swap, a
//! dead model endpoint that errors tasks without stopping the run, and more
//! tasks at once than the default instance pool holds.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn kiln(store: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(common::root())
        .arg("--store")
        .arg(store)
        .args(args)
        .env("KILN_GUEST_OUT", common::guest_out())
        .output()
        .expect("run kiln");
    out
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "kiln failed\nstdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn run_json(store: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["run", "--env", "shop", "--tasks", "0..3", "--deterministic", "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&kiln(store, &args))).expect("--json prints JSON")
}

#[test]
fn run_keeps_traces_and_replay_is_identical() {
    let dir = tempfile::tempdir().unwrap();
    let v = run_json(dir.path(), &["--name", "r1"]);
    assert_eq!(v["summary"]["finished"], 3);
    let tasks = v["index"]["tasks"].as_array().unwrap();
    assert!(tasks.iter().all(|t| t["trace"].as_str().unwrap().len() == 64));

    let ls = ok(&kiln(dir.path(), &["trace", "ls", "--run", "r1"]));
    assert_eq!(ls.lines().count(), 3, "{ls}");
    let show = ok(&kiln(dir.path(), &["trace", "show", "r1/0"]));
    assert!(show.contains("model ->") && show.contains("end: "), "{show}");

    // Replaying recorded processors on their own trace: every call identical.
    for p in ["loop-guard", "tool-call-repair", "goal-pin", "step-budget"] {
        let out = ok(&kiln(dir.path(), &["replay", "r1/0", "--processor", p]));
        let last = out.lines().last().unwrap_or_default().to_string();
        let (a, b) = last.split_once(" compared").unwrap().0.rsplit_once(", ").unwrap().1.split_once('/').unwrap();
        assert_eq!(a, b, "{p}: {last}");
    }
}

#[test]
fn same_seed_same_traces() {
    let dir = tempfile::tempdir().unwrap();
    let a = run_json(dir.path(), &["--name", "a"]);
    let b = run_json(dir.path(), &["--name", "b"]);
    let ids = |v: &serde_json::Value| v["index"]["tasks"].as_array().unwrap().iter().map(|t| t["trace"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b), "deterministic runs must give byte-identical traces");
}

#[test]
fn a_processor_swapped_in_mid_task_changes_the_rest_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = common::guest_out().join("hostile.wasm");
    let swap = format!("0@2:insert:0={}", hostile.display());
    run_json(dir.path(), &["--name", "s", "--tasks", "0", "--swap", &swap]);
    let events = ok(&kiln(dir.path(), &["trace", "show", "s/0", "--json"]));
    let events: Vec<serde_json::Value> = events.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let swap_at = events.iter().position(|e| e["event"] == "swap").expect("the swap is in the trace");
    assert_eq!(events[swap_at]["step"], 2);
    assert!(events[swap_at]["report"]["error"].is_null(), "{}", events[swap_at]);
    assert_eq!(events[swap_at]["report"]["new"].as_str().unwrap().len(), 64);
    // Before the swap the processor never ran; after it, it runs at every before-model.
    let ran = |e: &serde_json::Value| e["event"] == "call" && e["report"]["processor"] == "hostile";
    assert!(!events[..swap_at].iter().any(ran));
    let after: Vec<_> = events[swap_at..].iter().filter(|e| ran(e)).collect();
    assert!(!after.is_empty(), "the swapped-in processor never ran");
    assert!(after.iter().all(|e| e["step"].as_u64().unwrap() >= 2));
}

#[test]
fn a_dead_model_endpoint_errors_tasks_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = kiln(dir.path(), &["run", "--env", "house", "--tasks", "0..2", "--harness", "static", "--model", "openai:m@http://127.0.0.1:9/v1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["summary"]["finished"], 2);
    assert_eq!(v["summary"]["reasons"]["errored"], 2, "{v}");
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = kiln(dir.path(), &["run", "--env", "nowhere"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("environment `nowhere`") && err.contains("unknown environment") && err.contains("hint:"), "{err}");
    let out = kiln(dir.path(), &["run", "--tasks", "0..999999", "--tasks", "5000"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("out of range"));
    let out = kiln(dir.path(), &["inspect", "0000"]);
    assert!(!out.status.success());
}

#[test]
fn trace_export_writes_grpo_groups_and_sft_conversations_and_skips_damaged_traces() {
    let dir = tempfile::tempdir().unwrap();
    let plain = run_json(dir.path(), &["--name", "plain", "--harness", "static", "--seeds", "1,2,3"]);
    run_json(dir.path(), &["--name", "stock", "--seeds", "1,2,3"]);
    let file = dir.path().join("grpo.jsonl");
    let out = kiln(dir.path(), &["trace", "export", "--format", "grpo", "--keep-flat", "--out", file.to_str().unwrap()]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("exported 18 lines"), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 18, "3 tasks x 3 seeds x 2 harnesses");
    let mut groups = std::collections::BTreeMap::<String, Vec<&serde_json::Value>>::new();
    for l in &lines {
        groups.entry(l["group"].as_str().unwrap().to_string()).or_default().push(l);
        let turns = l["turns"].as_array().unwrap();
        assert!(!turns.is_empty() && turns.iter().all(|t| t["completion"]["role"] == "assistant" && t["messages"][0]["role"] == "system"), "{l}");
    }
    assert_eq!(groups.len(), 3, "one group per task, across seeds and harnesses");
    for members in groups.values() {
        assert_eq!(members.len(), 6);
        let sum: f64 = members.iter().map(|l| l["advantage"].as_f64().unwrap()).sum();
        assert!(sum.abs() < 1e-9, "advantages sum to zero within a group");
    }
    // The same export to stdout, byte for byte; one run's traces only.
    assert_eq!(ok(&kiln(dir.path(), &["trace", "export", "--keep-flat"])), text);
    assert_eq!(ok(&kiln(dir.path(), &["trace", "export", "--keep-flat", "--run", "plain"])).lines().count(), 9);
    // SFT: successful trajectories, each ending with the model's reply.
    let sft = ok(&kiln(dir.path(), &["trace", "export", "--format", "sft"]));
    for l in sft.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["messages"].as_array().unwrap().last().unwrap()["role"], "assistant");
    }
    let bad = kiln(dir.path(), &["trace", "export", "--format", "sft", "--keep-flat"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("hint:"));

    // A trace damaged on disk is named, skipped and counted; the export goes on.
    let trace = plain["index"]["tasks"][0]["trace"].as_str().unwrap().to_string();
    let path = dir.path().join("objects").join(&trace[..2]).join(&trace[2..]);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0xff;
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let out = kiln(dir.path(), &["trace", "export", "--keep-flat"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(ok(&out).lines().count(), 17);
    assert!(stderr.contains(&format!("warning: skipped: trace {trace} cannot be read")) && stderr.contains("1 damaged traces"), "{stderr}");
}

/// `kiln build <dir>` prints the component's id, and the id is the blake3 of
/// the bytes stored under it (and of the component cargo built).
#[test]
fn build_prints_the_blake3_of_the_stored_component() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(common::root())
        .arg("--store")
        .arg(dir.path())
        .args(["build", "processors/loop-guard"])
        // The target dir `make guests` and the test harness build into: nothing to rebuild.
        .env("KILN_GUEST_TARGET_DIR", common::root().join("target/guest"))
        .output()
        .expect("run kiln");
    let id = ok(&out).trim().to_string();
    assert_eq!(id.len(), 64, "`kiln build` should print a blake3 hex id, got {id:?}");
    let stored = std::fs::read(dir.path().join("objects").join(&id[..2]).join(&id[2..])).expect("the component is in the store");
    assert_eq!(blake3::hash(&stored).to_hex().as_str(), id);
    assert_eq!(stored, common::component("loop-guard"), "the stored bytes are the component cargo built");
}

/// A loopback OpenAI-compatible model that answers every request after
/// `delay` with a final answer (no tool call), one thread per connection, so
/// every task of a run waits on it at the same time. Returns its base URL.
fn slow_model(delay: std::time::Duration) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                std::thread::sleep(delay);
                let reply = r#"{"id":"r","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"I am done."},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13}}"#;
                let mut stream = stream;
                let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}", reply.len());
            });
        }
    });
    url
}

/// 150 tasks at once with the 7 stock processors need 1,050 live instances,
/// more than the default pool of 1,000: `kiln run` sizes the pool from -j,
/// so every task starts (before, the last ones could not instantiate).
#[test]
fn more_tasks_at_once_than_the_default_pool_holds_all_start() {
    let dir = tempfile::tempdir().unwrap();
    let url = slow_model(std::time::Duration::from_millis(500));
    let model = format!("openai:m@{url}");
    let out = kiln(dir.path(), &["run", "--env", "shop", "--split", "train", "--tasks", "0..150", "-j", "150", "--harness", "stock", "--model", &model, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["summary"]["finished"], 150, "{}", v["summary"]);
    assert_eq!(v["summary"]["reasons"].get("errored"), None, "no task may fail to start: {}", v["summary"]);
    assert_eq!(v["summary"]["faults"], serde_json::json!({}), "{}", v["summary"]);
}
