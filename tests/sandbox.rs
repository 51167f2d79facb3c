//! The sandbox against real components: every hostile fixture, with and
//! without the pooling allocator, is contained with its exact fault kind;
//! edits are all-or-nothing; policies, hot swap, the code cache and bad
//! component bytes behave as documented.
//!
//! Data-driven like wasmtime's `tests/wast.rs`: each case × pooling on/off is
//! one `libtest_mimic::Trial`.

mod common;

use std::sync::Arc;

use kiln::chat::{Message, ToolCall};
use kiln::sandbox::{
    Context, FailurePolicy, FaultKind, Grants, Hook, InstanceSpec, Limits, LoadError, Pipeline, ProcessorSpec, Reply,
    Runtime, RuntimeConfig, Swap, ToolOutcome, Verdict,
};
use libtest_mimic::{Arguments, Failed, Trial};

fn runtime(pooling: bool) -> Runtime {
    Runtime::new(RuntimeConfig { pooling, max_instances: 64, ..Default::default() }).unwrap()
}

fn spec(rt: &Runtime, name: &str, config: &str, limits: Limits, policy: FailurePolicy) -> ProcessorSpec {
    let loaded = rt.load(&common::component(name)).unwrap();
    ProcessorSpec { loaded, instance: InstanceSpec { config: config.into(), limits, grants: Arc::new(Grants::default()) }, policy }
}

/// A context with something at every hook's reach.
fn context() -> Context {
    let mut ctx = Context { system: "You are a shopper.".into(), ..Default::default() };
    ctx.messages.push(Message::user("Goal: buy red shoes\nYou are on the home page."));
    ctx.messages.push(Message::assistant("", vec![ToolCall { id: "c1".into(), name: "search".into(), arguments: r#"{"query":"red shoes"}"#.into() }]));
    ctx.messages.push(Message::tool("c1", "[1] red shoe $20"));
    ctx.messages.push(Message::user("Continue."));
    ctx.reply = Some(Reply { text: "ok".into(), calls: vec![] });
    ctx.call = Some(ToolCall { id: "c2".into(), name: "view".into(), arguments: r#"{"id":1}"#.into() });
    ctx.outcome = Some(ToolOutcome { content: "a page".into(), is_error: false });
    ctx
}

struct Attack {
    attack: &'static str,
    hook: Hook,
    limits: fn() -> Limits,
    expect: Expect,
}

enum Expect {
    Fault(FaultKind),
    /// No fault: the call is refused access, sees the error and blocks with it.
    Denied(&'static str),
}

fn attacks() -> Vec<Attack> {
    let lim = Limits::default;
    vec![
        Attack { attack: "loop", hook: Hook::BeforeModel, limits: lim, expect: Expect::Fault(FaultKind::Fuel) },
        Attack {
            attack: "loop",
            hook: Hook::AfterTool,
            limits: || Limits { fuel: 100_000_000_000, deadline_ms: 30, ..Limits::default() },
            expect: Expect::Fault(FaultKind::Deadline),
        },
        Attack {
            attack: "memory",
            hook: Hook::BeforeModel,
            limits: || Limits { fuel: 100_000_000_000, deadline_ms: 10_000, ..Limits::default() },
            expect: Expect::Fault(FaultKind::Memory),
        },
        Attack { attack: "recursion", hook: Hook::BeforeModel, limits: || Limits { fuel: 10_000_000_000, ..Limits::default() }, expect: Expect::Fault(FaultKind::Stack) },
        Attack {
            attack: "huge-return",
            hook: Hook::BeforeModel,
            limits: || Limits { memory_bytes: 512 << 20, fuel: 10_000_000_000, deadline_ms: 10_000, ..Limits::default() },
            expect: Expect::Fault(FaultKind::Output),
        },
        Attack { attack: "trap", hook: Hook::StepStart, limits: lim, expect: Expect::Fault(FaultKind::Trap) },
        Attack { attack: "panic", hook: Hook::AfterModel, limits: lim, expect: Expect::Fault(FaultKind::Panic) },
        Attack {
            attack: "host-flood",
            hook: Hook::BeforeModel,
            limits: || Limits { fuel: 100_000_000_000, deadline_ms: 10_000, ..Limits::default() },
            expect: Expect::Fault(FaultKind::HostCalls),
        },
        Attack { attack: "read-only-edit", hook: Hook::StepEnd, limits: lim, expect: Expect::Fault(FaultKind::Contract) },
        Attack { attack: "read-file", hook: Hook::BeforeModel, limits: lim, expect: Expect::Denied("no read grant") },
        Attack { attack: "http-get", hook: Hook::BeforeModel, limits: lim, expect: Expect::Denied("not on this processor's network allowlist") },
    ]
}

/// The hostile processor runs first, a well-behaved one after it. Whatever the
/// hostile one does, the context must come out exactly as if it had not run,
/// and the well-behaved one must still do its job.
fn contained(pooling: bool, a: &Attack) -> Result<(), Failed> {
    let rt = runtime(pooling);
    let config = format!(r#"{{"attack":"{}","hook":"{}"}}"#, a.attack, a.hook.name());
    let hostile = spec(&rt, "hostile", &config, (a.limits)(), FailurePolicy::Skip);
    let witness = spec(&rt, "counter", "{}", Limits::default(), FailurePolicy::Skip);
    let mut p = Pipeline::new(&rt, vec![hostile, witness], "t/1", 7, 10).map_err(|(n, f)| format!("{n}: {f}"))?;
    let mut ctx = context();
    let before = ctx.clone();
    let out = p.run(a.hook, &mut ctx);
    let hostile_report = &out.reports[0];
    match &a.expect {
        Expect::Fault(kind) => {
            let fault = hostile_report.fault.as_ref().ok_or_else(|| format!("expected a {kind:?} fault, got verdict {:?}", hostile_report.verdict))?;
            if fault.kind != *kind {
                return Err(format!("expected {kind:?}, got {fault}").into());
            }
            if !hostile_report.edits.is_empty() {
                return Err("a faulted call must report no edits".into());
            }
            // The witness ran after the fault (it wants before-model only).
            if a.hook == Hook::BeforeModel {
                let witness = out.reports.get(1).ok_or("the processor after the faulty one did not run")?;
                if witness.fault.is_some() {
                    return Err(format!("the witness faulted: {:?}", witness.fault).into());
                }
                let last = ctx.messages.last().unwrap();
                if last.content != "count=1" {
                    return Err(format!("the witness's edit is missing: last message {:?}", last.content).into());
                }
                ctx.messages.pop();
            }
            if ctx != before {
                return Err("the faulty call left edits behind".into());
            }
        }
        Expect::Denied(why) => {
            if let Some(f) = &hostile_report.fault {
                return Err(format!("expected a denial, got {f}").into());
            }
            match &hostile_report.verdict {
                Some(Verdict::Block(reason)) if reason.contains(why) => {}
                v => return Err(format!("expected a block carrying the denial `{why}`, got {v:?}").into()),
            }
            if !hostile_report.denials.iter().any(|d| d.contains(why)) {
                return Err(format!("the denial was not recorded: {:?}", hostile_report.denials).into());
            }
        }
    }
    // The host is up and the faulty processor works again on the next call
    // (rebuilt after a trap): a read-only hook it does not attack passes.
    let again = p.run(Hook::TaskEnd, &mut ctx);
    if again.reports.iter().any(|r| r.fault.is_some()) {
        return Err(format!("a later call faulted: {:?}", again.reports).into());
    }
    Ok(())
}

fn policies(pooling: bool) -> Result<(), Failed> {
    let rt = runtime(pooling);
    let cfg = r#"{"attack":"trap","hook":"before-model"}"#;
    // abort: the task must end.
    let mut p = Pipeline::new(&rt, vec![spec(&rt, "hostile", cfg, Limits::default(), FailurePolicy::Abort), spec(&rt, "counter", "{}", Limits::default(), FailurePolicy::Skip)], "t", 1, 10).unwrap();
    let mut ctx = context();
    let out = p.run(Hook::BeforeModel, &mut ctx);
    let (name, fault) = out.aborted.ok_or("abort policy did not abort")?;
    assert_eq!(name, "hostile");
    assert_eq!(fault.kind, FaultKind::Trap);
    assert_eq!(out.reports.len(), 1, "nothing runs after an abort");
    // disable after 2 faults: the third call does not reach it.
    let mut p = Pipeline::new(&rt, vec![spec(&rt, "hostile", cfg, Limits::default(), FailurePolicy::Disable { after: 2 })], "t", 1, 10).unwrap();
    for i in 0..3 {
        let out = p.run(Hook::BeforeModel, &mut ctx);
        match i {
            0 => assert!(out.disabled.is_empty()),
            1 => assert_eq!(out.disabled, vec!["hostile".to_string()]),
            _ => assert!(out.reports.is_empty(), "a disabled processor was called"),
        }
    }
    Ok(())
}

fn hot_swap(pooling: bool) -> Result<(), Failed> {
    let rt = runtime(pooling);
    let counter = || spec(&rt, "counter", "{}", Limits::default(), FailurePolicy::Skip);
    let mut p = Pipeline::new(&rt, vec![counter()], "t", 1, 10).unwrap();
    let mut ctx = context();
    for _ in 0..3 {
        p.run(Hook::BeforeModel, &mut ctx);
    }
    assert_eq!(ctx.messages.last().unwrap().content, "count=3");
    // Replace with a fresh instance: the state moves over, the count goes on.
    let r = p.swap(Swap::Replace { target: "counter".into(), spec: counter() });
    assert!(r.error.is_none(), "{:?}", r.error);
    assert!(r.state_bytes > 0);
    p.run(Hook::BeforeModel, &mut ctx);
    assert_eq!(ctx.messages.last().unwrap().content, "count=4");
    // A successor that refuses the state: the old processor stays.
    let hostile = spec(&rt, "hostile", r#"{"attack":"none"}"#, Limits::default(), FailurePolicy::Skip);
    let mut p2 = Pipeline::new(&rt, vec![hostile], "t", 1, 10).unwrap();
    let r = p2.swap(Swap::Replace { target: "hostile".into(), spec: counter() });
    assert!(r.error.as_deref().unwrap_or("").contains("kept hostile"), "{r:?}");
    assert_eq!(p2.names(), vec!["hostile"]);
    // Insert and remove.
    let r = p.swap(Swap::Insert { at: 0, spec: spec(&rt, "hostile", r#"{"attack":"none"}"#, Limits::default(), FailurePolicy::Skip) });
    assert!(r.error.is_none());
    assert_eq!(p.names(), vec!["hostile", "counter"]);
    let r = p.swap(Swap::Remove { target: "hostile".into() });
    assert!(r.error.is_none());
    let r = p.swap(Swap::Remove { target: "nobody".into() });
    assert!(r.error.unwrap().contains("no processor named `nobody`"));
    Ok(())
}

fn bad_components() -> Result<(), Failed> {
    let rt = runtime(false);
    match rt.load(&common::component("wrong-wit")) {
        Err(LoadError::WrongVersion { found, .. }) => assert_eq!(found, "0.2.0"),
        other => return Err(format!("wrong WIT: {other:?}").into()),
    }
    let good = common::component("counter");
    let mut corrupt = good.clone();
    let mid = corrupt.len() / 2;
    for b in &mut corrupt[mid..mid + 64] {
        *b ^= 0x5a;
    }
    assert!(matches!(rt.load(&corrupt), Err(LoadError::Invalid { .. })), "corrupt bytes must be refused");
    assert!(matches!(rt.load(&good[..good.len() / 3]), Err(LoadError::Invalid { .. })), "truncated bytes must be refused");
    assert!(matches!(rt.load(b"not wasm at all"), Err(LoadError::Invalid { .. })));
    // A config the processor rejects: its message, verbatim.
    let s = spec(&rt, "loop-guard", r#"{"no_such_key": 1}"#, Limits::default(), FailurePolicy::Skip);
    match Pipeline::new(&rt, vec![s], "t", 1, 10) {
        Err((name, f)) => {
            assert_eq!(name, "loop-guard");
            assert_eq!(f.kind, FaultKind::Config);
            assert!(f.message.contains("no_such_key"), "{}", f.message);
        }
        Ok(_) => return Err("a bad config was accepted".into()),
    }
    // Limits out of range are named.
    let e = Limits { memory_bytes: 1 << 40, ..Limits::default() }.validate().unwrap_err();
    assert!(e.to_string().contains("memory_bytes"));
    Ok(())
}

fn code_cache() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let cfg = || RuntimeConfig { pooling: false, cache_dir: Some(dir.path().to_path_buf()), ..Default::default() };
    let bytes = common::component("counter");
    let first = Runtime::new(cfg())?.load(&bytes).map_err(|e| e.to_string())?;
    assert!(!first.from_cache);
    let second = Runtime::new(cfg())?.load(&bytes).map_err(|e| e.to_string())?;
    assert!(second.from_cache, "the second runtime should load compiled code from the cache");
    // Tamper with the artifact: it must be recompiled, never loaded.
    for entry in std::fs::read_dir(dir.path())? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "cwasm") {
            let mut b = std::fs::read(&path)?;
            let n = b.len();
            b[n - 100] ^= 0xff;
            std::fs::write(&path, b)?;
        }
    }
    let third = Runtime::new(cfg())?.load(&bytes).map_err(|e| e.to_string())?;
    assert!(!third.from_cache, "a tampered artifact was loaded");
    assert_eq!(third.info, first.info);
    Ok(())
}

/// WASI randomness is seeded from (task seed, processor id) and clocks are
/// virtual: the same seed and step give the same bytes and time, always.
fn determinism() -> Result<(), Failed> {
    let rt = runtime(true);
    let observe = |seed: u64, step: u32| -> String {
        let s = spec(&rt, "hostile", r#"{"attack":"entropy"}"#, Limits::default(), FailurePolicy::Skip);
        let mut p = Pipeline::new(&rt, vec![s], "t", seed, 10).unwrap();
        p.set_step(step);
        let mut ctx = context();
        let out = p.run(Hook::BeforeModel, &mut ctx);
        assert!(out.reports[0].fault.is_none(), "{:?}", out.reports[0].fault);
        ctx.messages.last().unwrap().content.clone()
    };
    let a = observe(7, 3);
    assert_eq!(a, observe(7, 3), "same seed and step, different entropy");
    let other_seed = observe(8, 3);
    assert_ne!(a.split(' ').next(), other_seed.split(' ').next(), "the seed does not reach WASI randomness");
    // 2026-01-01T00:00:00Z plus one virtual second per step.
    assert!(a.ends_with(&format!("time={}", (1_767_225_600u128 + 3) * 1_000_000_000)), "{a}");
    assert!(observe(7, 4).ends_with(&format!("time={}", (1_767_225_600u128 + 4) * 1_000_000_000)));
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for pooling in [true, false] {
        let mode = if pooling { "pooling" } else { "on-demand" };
        for a in attacks() {
            let name = format!("contained::{}::{}::{}", a.attack, a.hook.name(), mode);
            trials.push(Trial::test(name, move || contained(pooling, &a)));
        }
        trials.push(Trial::test(format!("policies::{mode}"), move || policies(pooling)));
        trials.push(Trial::test(format!("hot_swap::{mode}"), move || hot_swap(pooling)));
    }
    trials.push(Trial::test("bad_components", bad_components));
    trials.push(Trial::test("code_cache", code_cache));
    trials.push(Trial::test("determinism", determinism));
    libtest_mimic::run(&args, trials).exit();
}
