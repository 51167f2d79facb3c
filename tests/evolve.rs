//! End to end: AEGIS evolving real harnesses with real components.
//!
//! - a short offline evolution on `shop` with `sim:weak`: the held-out score
//!   does not drop, no regression is let through, and the same seed in a
//!   fresh store writes byte-identical ledgers;
//! - an interrupted run, resumed, writes the same ledgers as one that ran
//!   through;
//! - the model-written path: a loopback OpenAI-compatible server answers
//!   first with processor source that does not compile, then with a fixed
//!   one; kiln compiles it, sends the error back, repairs, smoke-tests,
//!   gates and ships it;
//! - the evolved harness is a harness room harness: stored under
//!   `evolve/<run>/incumbent` with its lineage (each shipped edit, and the
//!   candidate record that explains it), and a new run can start from it;
//! - a `judge` model on loopback: a rejected candidate never reaches the
//!   Gate and carries the judge's review as its reason; a revision request
//!   goes back to the writer's conversation, the revised source is compiled,
//!   reviewed again (a second request is declined) and gated; the offline
//!   planner answers a request by narrowing; a judge that answers garbage
//!   leaves "no review" and the run goes on; ledgers are identical run to
//!   run and after a resume, which asks the judge nothing again;
//! - bad input ends cleanly with a reason.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use kiln::evolve::{evolve, resume, EvolveConfig, EvolveError, Paths, Progress, Reporter, Silent};
use kiln::sandbox::{Runtime, RuntimeConfig};
use kiln::store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rt() -> Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| Runtime::new(RuntimeConfig { pooling: false, ..Default::default() }).expect("runtime")).clone()
}

fn paths() -> Paths {
    common::guest_out(); // the stock processors are built
    let root = common::root();
    Paths {
        target_dir: root.join("target/guest"),
        guest_sdk: root.join("guest-sdk"),
        processors: root.join("processors"),
    }
}

fn config(env: &str) -> EvolveConfig {
    let mut c = EvolveConfig::new("t", env);
    c.train = (0..16).collect();
    c.test = (0..16).collect();
    c.rounds = 3;
    c.patience = 2;
    c.candidates = 3;
    c.gate_seeds = 2;
    c
}

/// Every ledger file of a run but run.json and timing.json, by relative path.
fn ledgers(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().replace('\\', "/");
                if rel != "run.json" && rel != "timing.json" {
                    out.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn assert_same(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "the same ledger files");
    for (k, v) in a {
        assert!(
            v == &b[k],
            "ledger {k} differs:\n--- first\n{}\n--- second\n{}",
            String::from_utf8_lossy(v),
            String::from_utf8_lossy(&b[k])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_evolution_is_safe_deterministic_and_resumable() {
    let stop = AtomicBool::new(false);
    let a = tempfile::tempdir().unwrap();
    let store_a = Store::open(a.path().join(".kiln")).unwrap();
    let report = evolve(&store_a, &rt(), config("shop"), &paths(), &Silent, &stop).await.expect("the run completes");
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert_eq!(report.let_through, 0, "no regression is let through");
    assert!(
        report.heldout_after >= report.heldout_before,
        "held-out {:?} -> {:?}",
        report.heldout_before,
        report.heldout_after
    );
    assert!(report.tally["proposed"] > 0, "candidates were proposed");
    assert!(!report.ships.is_empty(), "sim:weak from the static harness leaves room for at least one ship");
    let first = ledgers(&report.dir);
    for f in [
        "journal.md",
        "candidates.jsonl",
        "ships.json",
        "scoreboard.json",
        "regressions.md",
        "curves.json",
        "task_history.json",
        "R1/digest.json",
        "R1/landscape.md",
    ] {
        assert!(first.contains_key(f), "ledger {f} is written");
    }
    // The ledgers are in the store too.
    assert!(store_a.get_ref("evolve/t").unwrap().is_some());
    // The evolved harness is in the store under the run's name, with its
    // lineage: one record per ship, newest first, each naming the edit the
    // ledgers recorded and the candidate record as its reason.
    assert_eq!(report.harness_name, "evolve/t/incumbent");
    let final_id = kiln::harness::find(&store_a, &report.harness_name).unwrap();
    assert_eq!(final_id.to_hex(), report.harness);
    let shop = kiln::harness::Workshop::new(&rt(), &store_a, paths().target_dir);
    assert_eq!(shop.load(&final_id).unwrap().id(), final_id, "the stored harness loads back to its id");
    let chain = kiln::harness::lineage(&store_a, &final_id).unwrap();
    assert_eq!(chain.len(), report.ships.len(), "one lineage record per ship");
    let cands_text = String::from_utf8(first["candidates.jsonl"].clone()).unwrap();
    for (record, ship) in chain.iter().zip(report.ships.iter().rev()) {
        assert_eq!((record.child.to_hex(), record.parent.to_hex()), (ship.harness.clone(), ship.parent.clone()));
        let reason = record.reason.expect("a shipped edit says why");
        assert_eq!(reason.to_hex(), ship.record);
        let why: serde_json::Value = serde_json::from_slice(&store_a.get(&reason).unwrap()).unwrap();
        assert_eq!(why["format"], "kiln-evolve-ship/1");
        assert_eq!(why["candidate"]["manifest"]["candidate_id"], ship.candidate.as_str());
        assert_eq!(why["candidate"]["verdict"], "shipped");
        assert_eq!(why["candidate"]["manifest"]["edit"], record.edit.to_json(), "the ledger's edit is the lineage's");
        assert!(
            cands_text.lines().any(|l| serde_json::from_str::<serde_json::Value>(l).unwrap() == why["candidate"]),
            "the record is the ledger's line for that candidate"
        );
    }
    assert_eq!(chain.last().unwrap().parent.to_hex(), report.start, "the chain ends at the starting harness");
    // Every shipped candidate's manifest is complete and its gate passed in order.
    let cands = String::from_utf8(first["candidates.jsonl"].clone()).unwrap();
    for line in cands.lines() {
        let c: serde_json::Value = serde_json::from_str(line).unwrap();
        if c["verdict"] == "shipped" {
            let names: Vec<&str> =
                c["gate"]["checks"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
            assert_eq!(names, ["manifest", "canonical", "build-smoke", "no-regression", "target-flip", "held-out"]);
            assert!(
                c["manifest"]["capability_evidence"][0]["trace"].as_str().unwrap().len() == 64,
                "evidence points into a trace"
            );
        }
    }

    // The same seed in a fresh store: identical ledgers.
    let b = tempfile::tempdir().unwrap();
    let store_b = Store::open(b.path().join(".kiln")).unwrap();
    let again = evolve(&store_b, &rt(), config("shop"), &paths(), &Silent, &stop).await.unwrap();
    assert_same(&first, &ledgers(&again.dir));
    assert_eq!(again.harness, report.harness);

    // Interrupted at the first gate, then resumed: identical ledgers.
    struct StopAtGate<'a>(&'a AtomicBool);
    impl Reporter for StopAtGate<'_> {
        fn report(&self, e: &Progress) {
            if matches!(e, Progress::Stage { stage, .. } if stage == "gate") {
                self.0.store(true, Ordering::Relaxed);
            }
        }
    }
    let c = tempfile::tempdir().unwrap();
    let store_c = Store::open(c.path().join(".kiln")).unwrap();
    let stop_c = AtomicBool::new(false);
    let cut = evolve(&store_c, &rt(), config("shop"), &paths(), &StopAtGate(&stop_c), &stop_c).await.unwrap();
    assert_eq!(cut.status, "interrupted");
    let again = evolve(&store_c, &rt(), config("shop"), &paths(), &Silent, &stop).await;
    assert!(matches!(again, Err(EvolveError::Exists(_))), "a second start under the same name is refused");
    let resumed = resume(&store_c, &rt(), "t", &paths(), &Silent, &stop).await.unwrap();
    assert_eq!(resumed.status, report.status);
    assert_same(&first, &ledgers(&resumed.dir));
}

const BROKEN: &str = r#"use kiln_guest::{Conversation, Hook, Info, Processor, Response, Verdict};

#[derive(Default)]
pub struct StopGuard { blocked: u32 }

impl Processor for StopGuard {
    fn describe() -> Info { Info::new("stop-guard", "0.1.0").hooks([Hook::AfterModel]).group("stop-guard") }
    fn on_after_model(&mut self, _conv: &Conversation<'_>, response: &Response<'_>) -> Verdict {
        if response.calls().is_empty() && self.blocked < 2 {
            self.blocked += "one";
            return Verdict::Block("keep going: the task is not done".into());
        }
        Verdict::Pass
    }
}

kiln_guest::export!(StopGuard);
"#;

fn fixed() -> String {
    BROKEN.replace(r#"self.blocked += "one";"#, "self.blocked += 1;")
}

fn completion(content: &str) -> String {
    serde_json::json!({
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": content }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": 1000, "completion_tokens": 200 }
    })
    .to_string()
}

/// An OpenAI-compatible server on loopback that answers the replies in
/// order (the last one from then on): broken source first, then the fix.
async fn writer(received: Arc<Mutex<Vec<serde_json::Value>>>, replies: Vec<String>) -> String {
    serve(received, move |_, n| replies[n.min(replies.len() - 1)].clone()).await
}

/// What a chat server answers: the reply text for a request body, given how
/// many requests came before it.
type Respond = dyn Fn(&serde_json::Value, usize) -> String + Send + Sync;

/// An OpenAI-compatible server on loopback; every request body it receives
/// is kept in `received`. Returns its base URL.
async fn serve(
    received: Arc<Mutex<Vec<serde_json::Value>>>,
    respond: impl Fn(&serde_json::Value, usize) -> String + Send + Sync + 'static,
) -> String {
    let respond: Arc<Respond> = Arc::new(respond);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (count, received, respond) = (count.clone(), received.clone(), respond.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let body_start = loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..body_start]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < body_start + len {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let request: serde_json::Value =
                    serde_json::from_slice(&buf[body_start..]).unwrap_or(serde_json::Value::Null);
                received.lock().unwrap().push(request.clone());
                let n = count.fetch_add(1, Ordering::SeqCst);
                let body = completion(&respond(&request, n));
                let reply = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_written_processor_is_repaired_gated_and_shipped() {
    let received = Arc::new(Mutex::new(Vec::new()));
    let replies =
        vec![format!("Here is the processor:\n```rust\n{BROKEN}```\n"), format!("Fixed:\n```rust\n{}```\n", fixed())];
    let base = writer(received.clone(), replies).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join(".kiln")).unwrap();
    let mut cfg = config("shop");
    cfg.name = "written".into();
    cfg.meta = Some(format!("openai:writer@{base}"));
    cfg.candidates = 1;
    cfg.rounds = 2;
    cfg.patience = 1;
    let report =
        evolve(&store, &rt(), cfg, &paths(), &Silent, &AtomicBool::new(false)).await.expect("the run completes");
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    let cands = std::fs::read_to_string(report.dir.join("candidates.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(cands.lines().next().unwrap()).unwrap();
    assert_eq!(first["manifest"]["lever"], "model-written");
    assert_eq!(first["build"]["attempts"], 2, "one failed compile, one repair: {first}");
    assert!(first["build"]["errors"][0].as_str().unwrap().contains("error"), "the compile error is recorded");
    assert_eq!(first["verdict"], "shipped", "{first}");
    assert_eq!(report.ships[0].lever, "model-written");
    assert!(report.ships[0].attributed, "the shipped processor fired on the tasks it flipped");
    assert!(report.heldout_after >= report.heldout_before);
    assert_eq!(report.let_through, 0);
    // The model saw the contract, the SDK, the evidence, and then the compiler's error.
    let seen = received.lock().unwrap().clone();
    let prompt = seen[0]["messages"].to_string();
    assert!(
        prompt.contains("kiln:harness")
            && prompt.contains("kiln_guest::export!")
            && prompt.contains("Raw trace excerpts"),
        "the first prompt has the WIT, the SDK and the excerpts"
    );
    let repair = seen[1]["messages"].as_array().unwrap();
    assert!(
        repair.last().unwrap()["content"].as_str().unwrap().contains("does not compile"),
        "the error went back to the writer"
    );
}

/// A writer that never sends code, or code that never compiles: each
/// candidate ends with its reason, the round is idle, the run stops cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_without_code_or_without_compiling_code_ends_its_candidates() {
    for (replies, stage) in [
        (vec!["I would rather not write code.".to_string()], "evolver:no-code"),
        (vec![format!("```rust\n{BROKEN}```")], "evolver:build"),
    ] {
        let received = Arc::new(Mutex::new(Vec::new()));
        let base = writer(received.clone(), replies).await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join(".kiln")).unwrap();
        let mut cfg = config("shop");
        cfg.meta = Some(format!("openai:writer@{base}"));
        cfg.candidates = 1;
        cfg.rounds = 1;
        cfg.patience = 1;
        cfg.repairs = 1;
        let report =
            evolve(&store, &rt(), cfg, &paths(), &Silent, &AtomicBool::new(false)).await.expect("the run ends cleanly");
        assert!(report.ships.is_empty());
        assert_eq!(report.status, "patience");
        let cands = std::fs::read_to_string(report.dir.join("candidates.jsonl")).unwrap();
        let c: serde_json::Value = serde_json::from_str(cands.lines().next().unwrap()).unwrap();
        assert_eq!(c["verdict"], stage, "{c}");
        if stage == "evolver:build" {
            assert_eq!(c["build"]["attempts"], 2, "one repair, then it gives up: {c}");
            assert_eq!(received.lock().unwrap().len(), 2);
        }
        assert!(std::fs::read_to_string(report.dir.join("rejected.json")).unwrap().contains(stage));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join(".kiln")).unwrap();
    let stop = AtomicBool::new(false);
    let mut cfg = config("shop");
    cfg.test = vec![];
    let e = evolve(&store, &rt(), cfg, &paths(), &Silent, &stop).await.unwrap_err();
    assert!(matches!(e, EvolveError::NoHeldOut(_)), "{e}");
    assert!(e.to_string().contains("no held-out tasks"));
    let mut cfg = config("shop");
    cfg.start = "0123456789abcdef".into();
    let e = evolve(&store, &rt(), cfg, &paths(), &Silent, &stop).await.unwrap_err();
    assert!(matches!(e, EvolveError::Start { .. }), "{e}");
    let mut cfg = config("nowhere");
    cfg.name = "x".into();
    assert!(matches!(evolve(&store, &rt(), cfg, &paths(), &Silent, &stop).await, Err(EvolveError::UnknownEnv(_))));
    let mut cfg = config("shop");
    cfg.name = "a/b".into();
    let e = evolve(&store, &rt(), cfg, &paths(), &Silent, &stop).await.unwrap_err();
    assert!(matches!(e, EvolveError::Name { .. }), "{e}");
    let e = resume(&store, &rt(), "never-ran", &paths(), &Silent, &stop).await.unwrap_err();
    assert!(matches!(e, EvolveError::NoRun { .. }), "{e}");
}

/// The numbers of the issue's "Measured" section: `shop` and `house` with
/// `sim:weak`, the offline planner, 40 train and 40 held-out tasks, the
/// paper's T = 15, P = 3, K = 4. Ledgers land in target/evolve-measure/.
/// `cargo test -p kiln --test evolve -- --ignored --nocapture measure`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check; takes a minute or two"]
async fn measure() {
    for env in ["shop", "house"] {
        let root = common::root().join("target/evolve-measure").join(env);
        let _ = std::fs::remove_dir_all(&root);
        let store = Store::open(root.join(".kiln")).unwrap();
        let mut cfg = EvolveConfig::new(env, env);
        cfg.train = (0..40).collect();
        cfg.test = (0..40).collect();
        let started = std::time::Instant::now();
        let r = evolve(&store, &rt(), cfg, &paths(), &Silent, &AtomicBool::new(false)).await.unwrap();
        println!("== {env}: {} in {:.1}s", r.status, started.elapsed().as_secs_f64());
        println!("held-out {:?} -> {:?} of {}", r.heldout_before, r.heldout_after, r.heldout_total);
        println!("train per round {:?} of {}", r.train_curve, r.train_total);
        println!("let through {}; tally {:?}", r.let_through, r.tally);
        println!(
            "rounds {:?}",
            r.rounds.iter().map(|x| (x.round, x.proposed, x.shipped.clone(), x.rollouts)).collect::<Vec<_>>()
        );
        println!("{}", std::fs::read_to_string(r.dir.join("journal.md")).unwrap());
        // Twice with the same seed, in a fresh store: identical ledgers.
        let again = tempfile::tempdir().unwrap();
        let store = Store::open(again.path().join(".kiln")).unwrap();
        let mut cfg = EvolveConfig::new(env, env);
        cfg.train = (0..40).collect();
        cfg.test = (0..40).collect();
        let r2 = evolve(&store, &rt(), cfg, &paths(), &Silent, &AtomicBool::new(false)).await.unwrap();
        assert_same(&ledgers(&r.dir), &ledgers(&r2.dir));
        println!("second run with the same seed: identical ledgers ({} files)", ledgers(&r2.dir).len());
    }
}

/// A candidate that hangs (or traps) in smoke tests is ended by its limits
/// with the fault named; a harmless one passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_tests_catch_hangs_and_faults() {
    use kiln::agent::{run_task, Shape, TaskSpec};
    let suite = kiln::env::builtin("shop").unwrap();
    let task = suite.tasks(kiln::env::Split::Train)[0].clone();
    let mut env = suite.make().unwrap();
    let model = kiln::models::spec::parse("sim:weak").unwrap();
    let spec = TaskSpec {
        env_name: "shop".into(),
        task: task.clone(),
        seed: 1,
        max_steps: Some(6),
        harness_id: "static".into(),
        shape: Shape::default(),
        processors: vec![],
        swaps: vec![],
        mcp: vec![],
        deterministic: true,
    };
    let (_, trace) = run_task(&rt(), model.as_ref(), env.as_mut(), spec).await;
    let traces = vec![(task, trace.events)];
    let loaded = rt().load(&common::component("hostile")).unwrap();
    let smoke = |cfg: &str| kiln::evolve::forge::smoke(&rt(), &loaded, cfg, &[], &traces);
    let hang = smoke(r#"{"attack": "loop"}"#);
    assert!(!hang.passed, "{hang:?}");
    let reason = hang.reason.unwrap();
    assert!(reason.contains("fuel") || reason.contains("deadline"), "{reason}");
    let trap = smoke(r#"{"attack": "panic"}"#);
    assert!(trap.reason.unwrap().contains("panic"));
    let fine = smoke(r#"{"attack": "none"}"#);
    assert!(fine.passed, "{fine:?}");
    assert!(!fine.changed.is_empty(), "it appends a message, which counts as a change");
    let seeded = smoke(r#"{"attack": "entropy"}"#);
    assert!(seeded.passed, "randomness and clocks are fixed by the seed, so two replays agree: {seeded:?}");
}

/// A harness manifest can start a run; one that does not build is refused
/// with the manifest's own error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_start_from_harness_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join(".kiln")).unwrap();
    let stop = AtomicBool::new(false);
    let mut cfg = config("shop");
    cfg.start = common::root().join("harnesses/stock.toml").display().to_string();
    cfg.rounds = 1;
    cfg.patience = 1;
    cfg.candidates = 1;
    let r = evolve(&store, &rt(), cfg, &paths(), &Silent, &stop).await.expect("the stock manifest starts a run");
    assert_eq!(r.let_through, 0);
    // A stored harness starts a run too: here, the first run's incumbent, by name.
    let mut cfg = config("shop");
    cfg.name = "onward".into();
    cfg.start = r.harness_name.clone();
    cfg.rounds = 1;
    cfg.patience = 1;
    cfg.candidates = 1;
    let onward = evolve(&store, &rt(), cfg, &paths(), &Silent, &stop).await.expect("a stored harness starts a run");
    assert_eq!(onward.start, r.harness, "it starts where the first run ended");
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "name = \"broken\"\n[[processors]]\nsource = \"no/such/crate\"\n").unwrap();
    let mut cfg = config("shop");
    cfg.name = "broken".into();
    cfg.start = broken.display().to_string();
    let e = evolve(&store, &rt(), cfg, &paths(), &Silent, &stop).await.unwrap_err();
    assert!(matches!(e, EvolveError::Start { .. }), "{e}");
    assert!(!store.root().join("evolve/broken/run.json").exists(), "nothing is written for a run that never started");
}

/// A harness that asks for text actions is evolved as it is: its rollouts
/// run with the model speaking text actions (and are cached apart from the
/// same harness with native tool calls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_action_harnesses_roll_out_with_text_actions() {
    use kiln::evolve::rollout::{Counters, Lab};
    use kiln::trace::Event;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join(".kiln")).unwrap();
    let shop = kiln::harness::Workshop::new(&rt(), &store, paths().target_dir);
    let manifest = |name: &str, text_actions: bool| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, format!("name = \"{name}\"\n[tools]\ntext_actions = {text_actions}\n")).unwrap();
        shop.open(&path).unwrap().harness
    };
    let suite = kiln::env::builtin("shop").unwrap();
    let task = suite.tasks(kiln::env::Split::Train)[0].clone();
    let lab = Lab {
        rt: rt(),
        store: store.clone(),
        suite: Arc::from(suite),
        env_name: "shop".into(),
        model: Arc::from(kiln::models::spec::parse("sim:weak").unwrap()),
        max_steps: Some(3),
        jobs: 1,
        counters: Arc::new(Counters::default()),
    };
    for (text_actions, suffix) in [(true, true), (false, false)] {
        let harness = manifest(if text_actions { "text" } else { "native" }, text_actions);
        let rows = lab.run(&harness, &[(task.clone(), 1)]).await.unwrap();
        let events = lab.events(&rows[0].trace).unwrap();
        let Some(Event::TaskStart { model, .. }) = events.first() else { panic!("a trace starts with task-start") };
        assert_eq!(model.ends_with("(text actions)"), suffix, "text_actions = {text_actions}: model {model}");
    }
}

/// The user prompt of a chat request (the judge's prompt about one candidate).
fn user_prompt(request: &serde_json::Value) -> String {
    request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// The candidate a judge prompt is about (`# Candidate C-R1-02`).
fn candidate_of(prompt: &str) -> String {
    prompt.lines().find_map(|l| l.strip_prefix("# Candidate ")).unwrap_or_default().trim().to_string()
}

/// A judge's reply: the JSON object, in a fence amid prose as models write it.
fn verdict(verdict: &str, review: &str, revision: Option<&str>) -> String {
    let object =
        serde_json::json!({ "verdict": verdict, "review": review, "revision": revision, "concerns": ["evidence"] });
    format!("My review follows.\n```json\n{object}\n```\n")
}

/// A reporter that keeps every event.
#[derive(Default)]
struct Collect(Mutex<Vec<Progress>>);
impl Reporter for Collect {
    fn report(&self, e: &Progress) {
        self.0.lock().unwrap().push(e.clone());
    }
}

/// Every candidate record of a run, in order.
fn records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("candidates.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn record<'a>(records: &'a [serde_json::Value], id: &str) -> &'a serde_json::Value {
    records.iter().find(|r| r["manifest"]["candidate_id"] == id).unwrap_or_else(|| panic!("no record for {id}"))
}

/// The judge's rejection, and the offline planner's answer to a revision
/// request, end to end: the judge (on loopback) rejects C-R1-01, asks for
/// C-R1-02's claims to drop one target, and approves the rest. The rejected
/// candidate never reaches the Gate; the narrowed one is reviewed again and
/// gated in its original's place. The same run in a fresh store writes the
/// same ledgers; an interrupted run, resumed, too, without asking the judge
/// anything again (its replies are cached).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_judge_rejects_and_narrows_offline_and_the_gate_decides() {
    const REJECTION: &str =
        "It blocks every final answer alike, whatever the task; that games the format, not the failure.";
    let received = Arc::new(Mutex::new(Vec::new()));
    let base = serve(received.clone(), |request, _| {
        let prompt = user_prompt(request);
        if prompt.contains("already a revision") {
            return verdict("approve", "The narrowed claims match the evidence.", None);
        }
        match candidate_of(&prompt).as_str() {
            "C-R1-01" => verdict("reject", REJECTION, None),
            "C-R1-02" => {
                let targets =
                    prompt.lines().find_map(|l| l.strip_prefix("- predicted to unlock: ")).unwrap_or_default();
                let first = targets.split(", ").next().unwrap_or_default();
                verdict(
                    "revise",
                    "One predicted unlock has no malformed call in its trace.",
                    Some(&format!("Drop {first} from the tasks to unlock.")),
                )
            }
            _ => verdict("approve", "The evidence supports it.", None),
        }
    })
    .await;
    let cfg = || {
        let mut c = config("shop");
        c.name = "judged".into();
        c.judge = Some(format!("openai:judge-7b@{base}"));
        c.rounds = 1;
        c.patience = 1;
        c
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join(".kiln")).unwrap();
    let seen = Collect::default();
    let report =
        evolve(&store, &rt(), cfg(), &paths(), &seen, &AtomicBool::new(false)).await.expect("the run completes");
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    let recs = records(&report.dir);

    // (a) rejected: recorded with the judge's review, never gated.
    let rejected = record(&recs, "C-R1-01");
    assert_eq!(rejected["verdict"], "judge-rejected", "{rejected}");
    assert_eq!(rejected["reason"], REJECTION);
    assert_eq!(rejected["judge"]["review"]["verdict"], "reject");
    assert!(rejected["judge"]["model"].as_str().unwrap().contains("judge-7b"));
    assert!(rejected["gate"].is_null(), "a rejected candidate is not gated");
    let events = seen.0.lock().unwrap().clone();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Progress::Stage { stage, detail, .. } if stage == "gate" && detail == "C-R1-01")),
        "the Gate never saw C-R1-01"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, Progress::Stage { stage, detail, .. } if stage == "judge" && detail == "C-R1-01")));
    assert_eq!(report.tally["judge-rejected"], 1);
    let rejected_json = std::fs::read_to_string(report.dir.join("rejected.json")).unwrap();
    assert!(rejected_json.contains("judge-rejected") && rejected_json.contains(REJECTION), "{rejected_json}");

    // The offline planner narrows C-R1-02's claims; the narrowed candidate
    // is reviewed again and goes to the Gate in its original's place.
    let narrowed = record(&recs, "C-R1-02");
    let revision = &narrowed["judge"]["revision"];
    assert_eq!(revision["outcome"], "replaced", "{narrowed}");
    assert_eq!(revision["review"]["verdict"], "approve");
    let before: Vec<String> =
        serde_json::from_value(revision["set_aside"]["manifest"]["predicted_impact"]["tasks_will_unlock"].clone())
            .unwrap();
    let after: Vec<String> =
        serde_json::from_value(narrowed["manifest"]["predicted_impact"]["tasks_will_unlock"].clone()).unwrap();
    assert_eq!(after, before[1..], "the one target the request named is dropped, the rest kept");
    assert!(revision["request"].as_str().unwrap().contains(&before[0]));
    assert!(!narrowed["gate"].is_null(), "the narrowed candidate is gated: {narrowed}");
    assert_eq!(report.tally["judge-revised"], 1);
    // Approved ones go on; every record the Critic let through was judged.
    for r in &recs {
        assert!(!r["judge"].is_null(), "judged: {r}");
    }
    assert_eq!(record(&recs, "C-R1-03")["judge"]["review"]["verdict"], "approve");
    let asked = received.lock().unwrap().len();
    assert_eq!(asked, recs.len() + 1, "one review per candidate, one for the revision");

    // Costs: each judge call's tokens, per candidate, per round and in all.
    assert_eq!(rejected["cost"]["judge_tokens"], 1200);
    assert_eq!(narrowed["cost"]["judge_tokens"], 2400, "the revision's review counts too");
    let cost: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.dir.join("cost.json")).unwrap()).unwrap();
    assert_eq!(cost["judge"]["calls"], asked);
    assert_eq!(cost["judge"]["tokens"], 1200 * asked as u64);
    assert_eq!(cost["rounds"][0]["judge"]["judge_rejected"], 1);
    let journal = std::fs::read_to_string(report.dir.join("journal.md")).unwrap();
    assert!(journal.contains("· judge openai:judge-7b@") && journal.contains("judge: reject — It blocks"), "{journal}");

    // The same run in a fresh store: identical ledgers.
    let first = ledgers(&report.dir);
    let dir2 = tempfile::tempdir().unwrap();
    let store2 = Store::open(dir2.path().join(".kiln")).unwrap();
    let again = evolve(&store2, &rt(), cfg(), &paths(), &Silent, &AtomicBool::new(false)).await.unwrap();
    assert_same(&first, &ledgers(&again.dir));

    // Interrupted at the Gate, then resumed: identical ledgers, and the
    // resumed run reads every review from the cache.
    struct StopAtGate<'a>(&'a AtomicBool);
    impl Reporter for StopAtGate<'_> {
        fn report(&self, e: &Progress) {
            if matches!(e, Progress::Stage { stage, .. } if stage == "gate") {
                self.0.store(true, Ordering::Relaxed);
            }
        }
    }
    let dir3 = tempfile::tempdir().unwrap();
    let store3 = Store::open(dir3.path().join(".kiln")).unwrap();
    let stop = AtomicBool::new(false);
    let asked_before_cut = received.lock().unwrap().len();
    let cut = evolve(&store3, &rt(), cfg(), &paths(), &StopAtGate(&stop), &stop).await.unwrap();
    assert_eq!(cut.status, "interrupted");
    let asked_by_cut = received.lock().unwrap().len() - asked_before_cut;
    assert!(asked_by_cut < asked, "the cut run stopped at its first Gate, before every review");
    let resumed = resume(&store3, &rt(), "judged", &paths(), &Silent, &AtomicBool::new(false)).await.unwrap();
    assert_eq!(
        received.lock().unwrap().len() - asked_before_cut,
        asked,
        "the cut and the resumed run ask what one run asks: reviews made before the stop come from the cache"
    );
    assert_same(&first, &ledgers(&resumed.dir));
}

/// The model-written path with a judge that asks for a revision, and then
/// (not allowed) for another: the writer's conversation goes on with the
/// judge's request, the revised source is compiled, smoke-tested, reviewed
/// again (the second request is declined and kept for the ledger) and gated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_request_goes_back_to_the_writer_and_the_revision_is_gated() {
    const ASK: &str = "Say in the block reason that the next reply must be a tool call.";
    const ASK_AGAIN: &str = "Also cap it at one block.";
    let revised =
        fixed().replace("keep going: the task is not done", "keep going: the task is not done; reply with a tool call");
    assert_ne!(revised, fixed());
    let to_writer = Arc::new(Mutex::new(Vec::new()));
    let replies = vec![format!("Here it is:\n```rust\n{}```\n", fixed()), format!("Revised:\n```rust\n{revised}```\n")];
    let writer_base = writer(to_writer.clone(), replies).await;
    let to_judge = Arc::new(Mutex::new(Vec::new()));
    let judge_base = serve(to_judge.clone(), |request, _| {
        if user_prompt(request).contains("already a revision") {
            verdict("revise", "Better; it still blocks twice.", Some(ASK_AGAIN))
        } else {
            verdict("revise", "The block reason does not say what to do instead.", Some(ASK))
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join(".kiln")).unwrap();
    let mut cfg = config("shop");
    cfg.name = "revised".into();
    cfg.meta = Some(format!("openai:writer@{writer_base}"));
    cfg.judge = Some(format!("openai:judge@{judge_base}"));
    cfg.candidates = 1;
    cfg.rounds = 1;
    cfg.patience = 1;
    let report =
        evolve(&store, &rt(), cfg, &paths(), &Silent, &AtomicBool::new(false)).await.expect("the run completes");
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());

    // The writer got the judge's request as the next turn of its conversation.
    let writes = to_writer.lock().unwrap().clone();
    assert_eq!(writes.len(), 2, "the first source, then the revision");
    let turns = writes[1]["messages"].as_array().unwrap();
    let first_turns = writes[0]["messages"].as_array().unwrap();
    assert_eq!(turns[..first_turns.len()], first_turns[..], "the conversation goes on");
    let answer = &turns[turns.len() - 2];
    assert_eq!(answer["role"], "assistant");
    assert!(answer["content"].as_str().unwrap().contains("Here it is:"), "its own first reply is in the conversation");
    let follow_up = turns.last().unwrap()["content"].as_str().unwrap();
    assert!(
        follow_up.contains("A reviewer read this processor")
            && follow_up.contains(ASK)
            && follow_up.contains("```rust"),
        "{follow_up}"
    );
    assert!(!writes.iter().any(|w| w.to_string().contains(ASK_AGAIN)), "the second request never reaches the writer");

    // The revision was compiled, reviewed again with the request it answers, and gated.
    let judged = to_judge.lock().unwrap().clone();
    assert_eq!(judged.len(), 2, "one review, one review of the revision");
    let second = user_prompt(&judged[1]);
    assert!(second.contains("already a revision") && second.contains(ASK) && second.contains("reply with a tool call"));
    let recs = records(&report.dir);
    let c = &recs[0];
    let revision = &c["judge"]["revision"];
    assert_eq!(c["judge"]["review"]["verdict"], "revise", "{c}");
    assert_eq!(revision["outcome"], "replaced", "{c}");
    assert_eq!(revision["review"]["verdict"], "approve", "a second revise counts as approve");
    assert_eq!(revision["review"]["declined_revision"], ASK_AGAIN);
    assert_ne!(c["build"]["source"], revision["set_aside"]["build"]["source"], "the revised source was built");
    assert_ne!(c["manifest"]["harness"], revision["set_aside"]["manifest"]["harness"]);
    assert!(!c["gate"].is_null(), "the revision went to the Gate: {c}");
    assert!(c["verdict"] == "shipped" || c["verdict"].as_str().unwrap().starts_with("gate:"), "{c}");
    if c["verdict"] == "shipped" {
        assert_eq!(report.ships[0].harness, c["manifest"]["harness"].as_str().unwrap(), "the revision is what shipped");
    }
    assert_eq!(c["cost"]["compile_attempts"], 2, "the first source and the revision");
    assert_eq!(c["cost"]["meta_tokens"], 2400);
    assert_eq!(c["cost"]["judge_tokens"], 2400);
    assert_eq!(report.rounds[0].meta_tokens, 2400, "the round's cost row counts the revision's tokens");
}

/// A judge that answers garbage leaves "no review" on every candidate, and
/// the run goes on as it would without a judge: the Gate decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_judge_answering_garbage_leaves_no_review_and_the_run_goes_on() {
    let received = Arc::new(Mutex::new(Vec::new()));
    let base = serve(received.clone(), |_, _| "Looks fine to me, ship it!".to_string()).await;
    let mut cfg = config("shop");
    cfg.name = "garbage".into();
    cfg.judge = Some(format!("openai:judge@{base}"));
    cfg.rounds = 1;
    cfg.patience = 1;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join(".kiln")).unwrap();
    let report = evolve(&store, &rt(), cfg, &paths(), &Silent, &AtomicBool::new(false)).await.expect("the run goes on");
    let recs = records(&report.dir);
    assert!(!recs.is_empty());
    // Reviewed just before the Gate: candidates ranked after the one that
    // shipped are never reviewed.
    let reviewed: Vec<_> = recs.iter().filter(|r| r["verdict"] != "not-gated").collect();
    for r in &reviewed {
        let error = r["judge"]["error"].as_str().unwrap_or_else(|| panic!("no error recorded: {r}"));
        assert!(error.starts_with("no review: ") && error.contains("holds no JSON object"), "{error}");
        assert!(r["judge"]["review"].is_null());
        assert_eq!(r["cost"]["judge_tokens"], 1200, "an unreadable reply was still paid for");
    }
    assert!(recs.iter().filter(|r| r["verdict"] == "not-gated").all(|r| r["judge"].is_null()));
    assert_eq!(report.tally["judge-rejected"], 0);
    assert!(recs.iter().any(|r| !r["gate"].is_null()), "candidates went on to the Gate");
    assert!(!report.ships.is_empty(), "the Gate decides, as without a judge");
    assert_eq!(received.lock().unwrap().len(), reviewed.len());
}

/// A revision that does not compile is recorded with its compile error, and
/// the original goes on to the Gate unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_that_does_not_build_leaves_the_original_to_the_gate() {
    let to_writer = Arc::new(Mutex::new(Vec::new()));
    let replies = vec![format!("```rust\n{}```\n", fixed()), format!("Revised:\n```rust\n{BROKEN}```\n")];
    let writer_base = writer(to_writer.clone(), replies).await;
    let to_judge = Arc::new(Mutex::new(Vec::new()));
    let judge_base =
        serve(to_judge.clone(), |_, _| verdict("revise", "It blocks too often.", Some("Block at most once."))).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join(".kiln")).unwrap();
    let mut cfg = config("shop");
    cfg.name = "unbuilt".into();
    cfg.meta = Some(format!("openai:writer@{writer_base}"));
    cfg.judge = Some(format!("openai:judge@{judge_base}"));
    cfg.candidates = 1;
    cfg.rounds = 1;
    cfg.patience = 1;
    cfg.repairs = 0;
    let report =
        evolve(&store, &rt(), cfg, &paths(), &Silent, &AtomicBool::new(false)).await.expect("the run completes");
    let recs = records(&report.dir);
    let c = &recs[0];
    let revision = &c["judge"]["revision"];
    assert_eq!(revision["outcome"], "kept-original", "{c}");
    assert!(revision["detail"].as_str().unwrap().contains("evolver:build"), "{revision}");
    assert_eq!(revision["set_aside"]["failed"][0], "evolver:build", "the failed revision is recorded");
    assert!(revision["review"].is_null(), "a revision that never built is not reviewed");
    assert_eq!(to_judge.lock().unwrap().len(), 1);
    assert!(!c["gate"].is_null(), "the original went on to the Gate: {c}");
    assert_eq!(c["build"]["attempts"], 1, "the record's build is the original's");
    assert_eq!(c["cost"]["compile_attempts"], 2, "both builds are paid for");
    assert_eq!(report.tally["judge-revised"], 0);
}
