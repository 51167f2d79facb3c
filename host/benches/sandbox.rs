//! Benchmarks for the performance targets of `/work/shared/PERFORMANCE.md`
//! (summarized in `docs/performance.md`), measured side by side in one run.
//!
//! Run with `make bench`: it builds the components, runs this file and then
//! `scripts/bench-summary.py`, which turns criterion's estimates into medians
//! and ratios in `target/bench-summary.json`. Groups, each comparing its
//! inputs with `BenchmarkId`s as wasmtime's `benches/instantiation.rs` does:
//!
//! | group | what one iteration is |
//! |---|---|
//! | `hook/last-message/{10..10000}` | one before-model hook, one processor that reads the last message, N messages |
//! | `hook/ten/{10,10000}` | the same with ten such processors |
//! | `step/ten/{10,10000}` | the harness side of one agent-loop step with ten processors (model and tool stubbed out) |
//! | `loop-guard/{wasm,native}` | a before-tool and an after-tool call of loop-guard, as a component vs as plain Rust, on the calls and observations of a real shop episode |
//! | `loop-guard/{wasm,native}-short` | the same on ~80-byte made-up inputs, where the two calls' fixed cost dominates |
//! | `loop-guard/floor` | the same two calls of `tool-reader`, a component that reads what loop-guard reads and decides nothing: the crossing's share of `loop-guard/wasm` |
//! | `instantiate/ten/{pooling,on-demand}` | a new task's 10-processor pipeline, built and torn down |
//! | `swap/replace` | hot swap of a loaded component, state handed over |
//! | `load/{cache,compile}` | loading a component from the code cache vs compiling it |
//! | `fuel/{on,off,bare}` | the loop-guard shop workload with fuel metering, without, and without fuel or epoch (deadline) checks: what the sandbox's instrumentation costs |
//!
//! Besides the timings it measures the resident memory of 200 live
//! loop-guard instances (not a timing, so not a criterion benchmark) and
//! writes it to `kiln-memory.json` beside criterion's results; and it holds
//! 1,000 tasks of 10 processors each live at once, runs a step in each, and
//! writes their memory and time to `kiln-concurrency.json`.
//!
//! Design choices. Everything a benchmark needs (runtimes, loaded
//! components, contexts) is built before its timing starts. Every benchmark
//! leaves its input as it found it, so one iteration costs the same as the
//! next: processors here only read, and the step benchmark truncates the two
//! messages a step appends. Contexts are deterministic: messages of fixed
//! shapes, so only the length varies between the inputs of a group.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode};
use kiln::chat::{Message, ToolCall};
use kiln::models::Usage;
use kiln::sandbox::{
    Context, FailurePolicy, Grants, Hook, HookOutcome, Instance, InstanceSpec, Limits, Loaded, Pipeline, ProcessorSpec,
    Reply, Runtime, RuntimeConfig, Swap, ToolOutcome, Verdict, VirtualClock,
};
use kiln::trace::{Event, Trace};
use loop_guard::{Decision, LoopGuard};

/// The seven stock processors, by crate name.
const STOCK: [&str; 7] =
    ["loop-guard", "tool-call-repair", "goal-pin", "observation-trim", "step-budget", "history-compactor", "notes"];

/// Conversation lengths of the history-scaling benchmarks.
const LENGTHS: [usize; 4] = [10, 100, 1_000, 10_000];

/// Live instances in the memory measurement.
const MEMORY_INSTANCES: usize = 200;

/// Tasks held live at once in the concurrency measurement (10 processors each).
const CONCURRENT_TASKS: usize = 1_000;

fn main() {
    let root = repository_root();
    // Criterion writes under `target/criterion` of the working directory,
    // which for `cargo bench` is host/; keep the results at the workspace's.
    if std::env::var_os("CRITERION_HOME").is_none() {
        std::env::set_var("CRITERION_HOME", root.join("target/criterion"));
    }
    let out_dir = PathBuf::from(std::env::var_os("CRITERION_HOME").expect("set above"));
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();

    let mut c = Criterion::default().configure_from_args();
    let bench = Bench::new(&root);

    hook_last_message(&mut c, &bench);
    hook_ten(&mut c, &bench);
    step_ten(&mut c, &bench);
    loop_guard_wasm_vs_native(&mut c, &bench);
    instantiate_ten(&mut c, &bench);
    swap_replace(&mut c, &bench);
    load_cache_vs_compile(&mut c, &bench);
    fuel_on_off(&mut c, &bench);

    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    if wanted("memory/loop-guard") && !std::env::args().any(|a| a == "--list" || a == "--test") {
        memory_per_instance(&bench, &out_dir);
    }
    if wanted("concurrency/tasks") && !std::env::args().any(|a| a == "--list" || a == "--test") {
        concurrent_tasks(&bench, &out_dir);
    }
    c.final_summary();
}

// ---- fixtures ----

/// The repository root (the parent of host/).
fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_path_buf()
}

/// Where the components are: `$KILN_GUEST_OUT` when set (`make bench` sets
/// it after building them), else both guest workspaces are built here the
/// way tests/common/mod.rs does (a no-op when they are up to date).
fn guest_dir(root: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("KILN_GUEST_OUT") {
        return PathBuf::from(dir);
    }
    let target = root.join("target/guest");
    for workspace in ["processors", "tests/fixtures"] {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--quiet", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(root.join(workspace).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .env_remove("RUSTFLAGS")
            .status()
            .expect("cannot run cargo to build the components");
        assert!(status.success(), "building the {workspace} components failed (is the wasm32-wasip2 target installed? `make setup`)");
    }
    target.join("wasm32-wasip2/release")
}

/// Runtimes and component bytes shared by every benchmark.
struct Bench {
    components: PathBuf,
    /// Pooling allocator, fuel on: the configuration kiln runs tasks with.
    pooling: Runtime,
    /// The on-demand allocator, fuel on.
    on_demand: Runtime,
    /// Pooling, fuel metering off (`fuel/off` only).
    no_fuel: Runtime,
    /// Pooling, neither fuel nor epoch checks in the code (`fuel/bare` only).
    bare: Runtime,
    /// Compiled code of the runtimes above; makes a second run start fast.
    code_cache: PathBuf,
}

impl Bench {
    fn new(root: &Path) -> Bench {
        let components = guest_dir(root);
        let code_cache = root.join("target/bench-code-cache");
        let runtime = |pooling: bool, fuel: bool, epochs: bool| {
            Runtime::new(RuntimeConfig { pooling, max_instances: 512, fuel, epochs, cache_dir: Some(code_cache.clone()) })
                .unwrap_or_else(|e| panic!("cannot build the benchmark runtime: {e}"))
        };
        Bench {
            pooling: runtime(true, true, true),
            on_demand: runtime(false, true, true),
            no_fuel: runtime(true, false, true),
            bare: runtime(true, false, false),
            components,
            code_cache,
        }
    }

    /// A component's bytes by crate name (`loop-guard`, `last-message`, ...).
    fn bytes(&self, name: &str) -> Vec<u8> {
        let path = self.components.join(format!("{}.wasm", name.replace('-', "_")));
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!("cannot read component {}: {e} (run `make guests`, or unset KILN_GUEST_OUT to build here)", path.display())
        })
    }

    fn load(&self, rt: &Runtime, name: &str) -> Arc<Loaded> {
        rt.load(&self.bytes(name)).unwrap_or_else(|e| panic!("cannot load {name}: {e}"))
    }

    /// A processor with the default limits and no grants.
    fn spec(&self, rt: &Runtime, name: &str, config: &str) -> ProcessorSpec {
        ProcessorSpec {
            loaded: self.load(rt, name),
            instance: InstanceSpec { config: config.into(), limits: Limits::default(), grants: Arc::new(Grants::default()) },
            policy: FailurePolicy::Skip,
        }
    }

    fn pipeline(&self, rt: &Runtime, specs: Vec<ProcessorSpec>) -> Pipeline {
        Pipeline::new(rt, specs, "bench/task-1", 7, 1_000_000).unwrap_or_else(|(name, f)| panic!("{name} could not start: {f}"))
    }
}

/// A conversation of `n` messages: a goal, then steps of (assistant call,
/// tool result), ending on a tool result. Every message has a fixed shape, so
/// the last one is the same whatever `n` is.
fn context(n: usize) -> Context {
    let mut ctx = Context { system: "You are a careful shopping agent. Use the tools.".into(), ..Default::default() };
    ctx.messages.push(Message::user("Goal: buy a pair of red running shoes in size 42 for under $60"));
    for i in 1..n {
        let message = if i % 2 == 1 {
            let call = ToolCall { id: format!("c{i}"), name: "search".into(), arguments: format!(r#"{{"query": "red running shoes", "page": {}}}"#, i % 7) };
            Message::assistant("Searching the catalogue.", vec![call])
        } else {
            Message::tool(
                format!("c{}", i - 1),
                "[1] Red running shoe, mesh upper, size 38-46, $54.99\n[2] Trail runner, red/black, $72.00\n[3] Road racer, crimson, $59.50",
            )
        };
        ctx.messages.push(message);
    }
    ctx
}

/// Run a hook and check that every processor passed without a fault.
fn run_checked(p: &mut Pipeline, hook: Hook, ctx: &mut Context) -> HookOutcome {
    let out = p.run(hook, ctx);
    for r in &out.reports {
        assert!(r.fault.is_none(), "{} faulted at {hook}: {:?}", r.processor, r.fault);
    }
    assert_eq!(out.verdict, Verdict::Pass, "a benchmark processor did not pass at {hook}");
    out
}

/// Short groups: the machine is small and shared, and every measured
/// function here is fast, so 5 s per input gives thousands of samples' worth.
fn quick<'a>(c: &'a mut Criterion, name: &str) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4)).sample_size(60);
    g
}

// ---- 1, 2: hook overhead against history length ----

fn hook_last_message(c: &mut Criterion, b: &Bench) {
    let mut g = quick(c, "hook/last-message");
    for n in LENGTHS {
        let mut p = b.pipeline(&b.pooling, vec![b.spec(&b.pooling, "last-message", "{}")]);
        let mut ctx = context(n);
        let before = ctx.clone();
        assert_eq!(run_checked(&mut p, Hook::BeforeModel, &mut ctx).reports.len(), 1);
        assert_eq!(ctx, before, "last-message must not edit the context");
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| bench.iter(|| black_box(p.run(Hook::BeforeModel, &mut ctx))));
    }
    g.finish();
}

fn hook_ten(c: &mut Criterion, b: &Bench) {
    let mut g = quick(c, "hook/ten");
    for n in [10, 10_000] {
        let specs = (0..10).map(|_| b.spec(&b.pooling, "last-message", "{}")).collect();
        let mut p = b.pipeline(&b.pooling, specs);
        let mut ctx = context(n);
        assert_eq!(run_checked(&mut p, Hook::BeforeModel, &mut ctx).reports.len(), 10);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| bench.iter(|| black_box(p.run(Hook::BeforeModel, &mut ctx))));
    }
    g.finish();
}

// ---- 3: one agent-loop step, harness side ----

/// The part of `agent::Task` a step's bookkeeping needs: the trace and the
/// step number. Mirrors host/src/agent/mod.rs event for event.
struct StepHarness {
    trace: Trace,
    step: u32,
}

impl StepHarness {
    fn hook(&mut self, p: &mut Pipeline, hook: Hook, ctx: &mut Context) -> HookOutcome {
        let step = self.step;
        self.trace.push(Event::Hook { step, hook });
        let mut o = p.run(hook, ctx);
        for report in std::mem::take(&mut o.reports) {
            self.trace.push(Event::Call { step, report });
        }
        o
    }

    fn append(&mut self, ctx: &mut Context, message: Message) {
        self.trace.push(Event::Append { step: self.step, message: message.clone() });
        ctx.messages.push(message);
    }

    fn set_reply(&mut self, ctx: &mut Context, reply: Option<Reply>) {
        self.trace.push(Event::SetReply { step: self.step, reply: reply.clone() });
        ctx.reply = reply;
    }

    /// step-start, before-model, (model), after-model, before-tool, (tool),
    /// after-tool, step-end, with the events the agent loop writes for each.
    /// `model_reply` stands in for the model, `observation` for the tool.
    fn step(&mut self, p: &mut Pipeline, ctx: &mut Context, model_reply: &Reply, observation: &str) {
        let step = self.step;
        p.set_step(step);
        self.hook(p, Hook::StepStart, ctx);
        self.hook(p, Hook::BeforeModel, ctx);
        self.trace.push(Event::ModelCall {
            step,
            model: "stub".into(),
            text: model_reply.text.clone(),
            calls: model_reply.calls.clone(),
            usage: Usage::default(),
            nanos: 0,
            error: None,
        });
        self.set_reply(ctx, Some(model_reply.clone()));
        self.hook(p, Hook::AfterModel, ctx);
        let reply = ctx.reply.clone().unwrap_or_default();
        self.set_reply(ctx, None);
        self.append(ctx, Message::assistant(reply.text.clone(), reply.calls.clone()));
        for call in &reply.calls {
            self.trace.push(Event::SetCall { step, call: Some(call.clone()), answer: None });
            ctx.call = Some(call.clone());
            ctx.answer = None;
            self.hook(p, Hook::BeforeTool, ctx);
            let call = ctx.call.clone().unwrap_or_else(|| call.clone());
            let content = observation.to_string();
            self.trace.push(Event::ToolCall { step, call: call.clone(), by: "env".into(), content: content.clone(), is_error: false, nanos: 0 });
            let outcome = ToolOutcome { content, is_error: false };
            self.trace.push(Event::SetOutcome { step, outcome: Some(outcome.clone()) });
            ctx.outcome = Some(outcome);
            self.hook(p, Hook::AfterTool, ctx);
            let content = ctx.outcome.take().map(|o| o.content).unwrap_or_default();
            self.trace.push(Event::SetOutcome { step, outcome: None });
            self.trace.push(Event::SetCall { step, call: None, answer: None });
            ctx.call = None;
            ctx.answer = None;
            self.append(ctx, Message::tool(call.id.clone(), content));
        }
        self.hook(p, Hook::StepEnd, ctx);
        self.trace.push(Event::StepEnd { step });
        self.step += 1;
    }
}

/// Eight distinct tool calls with their observations, and the order they are
/// made in: call 0 comes twice per round of ten, so loop-guard sees repeats
/// and advises now and then (at most three of one call fall in its window of
/// twelve), but never blocks.
struct Workload {
    calls: Vec<ToolCall>,
    observations: Vec<String>,
    order: [usize; 10],
}

impl Workload {
    const ORDER: [usize; 10] = [0, 1, 2, 3, 0, 4, 5, 6, 7, 1];

    /// Short made-up calls and observations (~80 bytes each): the fixed cost
    /// of the two hook calls dominates.
    fn short() -> Workload {
        let tools = ["search", "view", "add_to_cart", "back"];
        let calls = (0..8)
            .map(|i| ToolCall {
                id: format!("call-{i}"),
                name: tools[i % tools.len()].into(),
                arguments: format!(r#"{{ "query": "red running shoes size {}", "page": {} }}"#, 38 + i, i % 3),
            })
            .collect();
        let observations = (0..8)
            .map(|i| format!("[{i}] Red running shoe   model {i}\n\n  size 38-46,  ${}.99   \n[{}] Trail runner, red/black", 50 + i, i + 1))
            .collect();
        Workload { calls, observations, order: Self::ORDER }
    }

    /// The calls and observations of a real `shop` episode (task 0, seed 1):
    /// a search with the goal's words, the first five products it lists
    /// viewed, the next page of results, and a second search. What loop-guard
    /// sees in kiln's own suites (observations of 150-500 bytes).
    fn shop() -> Workload {
        let suite = kiln::env::open("shop").expect("the shop suite is built in");
        let task = suite.tasks(kiln::env::Split::Train).into_iter().next().expect("shop has train tasks");
        let mut env = suite.make().expect("shop starts");
        let start = env.reset(&task, 1).expect("shop task 0 resets");
        let goal = start.prompt.lines().next().and_then(|l| l.strip_prefix("Goal: ")).expect("a Goal: line").to_string();
        let mut calls = Vec::new();
        let mut observations = Vec::new();
        let mut act = |name: &str, arguments: String| {
            let call = ToolCall { id: format!("call-{}", calls.len()), name: name.into(), arguments };
            let seen = env.step(&call).expect("the shop env answers").content;
            calls.push(call);
            observations.push(seen.clone());
            seen
        };
        let results = act("search", serde_json::json!({ "query": goal }).to_string());
        let ids: Vec<String> = results
            .lines()
            .filter_map(|l| l.strip_prefix('[').and_then(|l| l.split_once(']')).map(|(id, _)| id.to_string()))
            .take(5)
            .collect();
        assert_eq!(ids.len(), 5, "the goal's search should list five products: {results}");
        for id in ids {
            act("view", serde_json::json!({ "id": id }).to_string());
        }
        act("next_page", "{}".into());
        let words: Vec<&str> = goal.split_whitespace().take(4).collect();
        act("search", serde_json::json!({ "query": words.join(" ") }).to_string());
        Workload { calls, observations, order: Self::ORDER }
    }

    fn at(&self, i: usize) -> (&ToolCall, &str) {
        let k = self.order[i % self.order.len()];
        (&self.calls[k], &self.observations[k])
    }
}

fn step_ten(c: &mut Criterion, b: &Bench) {
    // Five readers of the last message (before-model, after-tool) and five
    // loop-guards (before-tool, after-tool): 20 processor calls per step.
    let workload = Workload::short();
    let mut g = quick(c, "step/ten");
    for n in [10, 10_000] {
        let specs = (0..10)
            .map(|i| if i % 2 == 0 { b.spec(&b.pooling, "last-message", "{}") } else { b.spec(&b.pooling, "loop-guard", "{}") })
            .collect();
        let mut p = b.pipeline(&b.pooling, specs);
        let mut ctx = context(n);
        let mut h = StepHarness { trace: Trace::default(), step: 0 };
        let mut i = 0usize;
        let mut one_step = |h: &mut StepHarness, p: &mut Pipeline, ctx: &mut Context| {
            let (call, observation) = workload.at(i);
            i += 1;
            let reply = Reply { text: "Let me look.".into(), calls: vec![call.clone()] };
            h.step(p, ctx, &reply, observation);
            // Undo the step's two appended messages: every step sees n messages.
            ctx.messages.truncate(n);
            // The agent loop keeps its trace to the end of the task; here it is
            // emptied now and then so a long measurement does not grow it without bound.
            if h.trace.events.len() > 4_096 {
                h.trace.events.clear();
            }
        };
        // One checked step: every call passed and the context is back to n messages.
        one_step(&mut h, &mut p, &mut ctx);
        let faults: Vec<_> = h.trace.events.iter().filter_map(|e| match e {
            Event::Call { report, .. } if report.fault.is_some() || report.verdict != Some(Verdict::Pass) => Some(report.processor.clone()),
            _ => None,
        }).collect();
        assert!(faults.is_empty(), "processors faulted or blocked in a step: {faults:?}");
        let calls = h.trace.events.iter().filter(|e| matches!(e, Event::Call { .. })).count();
        assert_eq!(calls, 20, "a step should make 20 processor calls");
        assert_eq!(ctx.messages.len(), n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| bench.iter(|| one_step(&mut h, &mut p, &mut ctx)));
    }
    g.finish();
}

// ---- 4, 8: loop-guard as a component vs native; fuel on vs off ----

/// One before-tool and one after-tool call of a single loop-guard processor.
struct GuardedTool {
    pipeline: Pipeline,
    ctx: Context,
    i: usize,
}

impl GuardedTool {
    fn new(b: &Bench, rt: &Runtime) -> GuardedTool {
        GuardedTool::with(b, rt, "loop-guard")
    }

    /// The same calls into another processor at before-tool and after-tool.
    fn with(b: &Bench, rt: &Runtime, component: &str) -> GuardedTool {
        let pipeline = b.pipeline(rt, vec![b.spec(rt, component, "{}")]);
        GuardedTool { pipeline, ctx: context(10), i: 0 }
    }

    fn call(&mut self, w: &Workload) -> (HookOutcome, HookOutcome) {
        let (call, observation) = w.at(self.i);
        self.i += 1;
        self.ctx.call = Some(call.clone());
        let before = self.pipeline.run(Hook::BeforeTool, &mut self.ctx);
        self.ctx.outcome = Some(ToolOutcome { content: observation.to_string(), is_error: false });
        let after = self.pipeline.run(Hook::AfterTool, &mut self.ctx);
        (before, after)
    }

    /// Run a few rounds and check the component decides what native code does.
    fn check_against_native(&mut self, w: &Workload) {
        let mut native = LoopGuard::default();
        let mut advised = 0;
        for _ in 0..3 * w.order.len() {
            let (call, observation) = w.at(self.i);
            let (before, after) = self.call(w);
            let decision = native.observe_call(&call.name, &call.arguments);
            assert!(!matches!(decision, Decision::Block(_)), "the workload must not make loop-guard block");
            assert_eq!(before.verdict, Verdict::Pass);
            assert_eq!(!before.advice.is_empty(), matches!(decision, Decision::Advise(_)), "component and native code disagree");
            let observed = native.observe_result(&call.name, observation);
            assert_eq!(!after.advice.is_empty(), matches!(observed, Decision::Advise(_)), "component and native code disagree");
            advised += before.advice.len() + after.advice.len();
            assert!(before.reports.iter().chain(&after.reports).all(|r| r.fault.is_none()), "loop-guard faulted");
        }
        assert!(advised > 0, "the workload should make loop-guard advise now and then");
    }
}

fn loop_guard_wasm_vs_native(c: &mut Criterion, b: &Bench) {
    let mut g = quick(c, "loop-guard");
    // `wasm`/`native`: a real shop episode; `*-short`: ~80-byte made-up inputs.
    for (suffix, w) in [("", Workload::shop()), ("-short", Workload::short())] {
        let mut wasm = GuardedTool::new(b, &b.pooling);
        wasm.check_against_native(&w);
        g.bench_function(format!("wasm{suffix}"), |bench| bench.iter(|| black_box(wasm.call(&w))));
        let mut native = LoopGuard::default();
        let mut i = 0usize;
        g.bench_function(format!("native{suffix}"), |bench| {
            bench.iter(|| {
                let (call, observation) = w.at(i);
                i += 1;
                black_box((native.observe_call(&call.name, &call.arguments), native.observe_result(&call.name, observation)))
            })
        });
    }
    // What the two calls cost with the same data crossing and no logic.
    let w = Workload::shop();
    let mut floor = GuardedTool::with(b, &b.pooling, "tool-reader");
    let (before, after) = floor.call(&w);
    assert!(before.reports.iter().chain(&after.reports).all(|r| r.fault.is_none() && r.verdict == Some(Verdict::Pass)));
    g.bench_function("floor", |bench| bench.iter(|| black_box(floor.call(&w))));
    g.finish();
}

fn fuel_on_off(c: &mut Criterion, b: &Bench) {
    let w = Workload::shop();
    let mut g = quick(c, "fuel");
    for (name, rt) in [("on", &b.pooling), ("off", &b.no_fuel), ("bare", &b.bare)] {
        let mut guarded = GuardedTool::new(b, rt);
        guarded.check_against_native(&w);
        let fuel = guarded.call(&w).0.reports[0].fuel;
        assert_eq!(fuel > 0, name == "on", "fuel metering should be {}", if name == "on" { "on" } else { "off" });
        g.bench_function(name, |bench| bench.iter(|| black_box(guarded.call(&w))));
    }
    g.finish();
}

// ---- 5: a new task's pipeline ----

fn instantiate_ten(c: &mut Criterion, b: &Bench) {
    let mut g = quick(c, "instantiate/ten");
    for (name, rt) in [("pooling", &b.pooling), ("on-demand", &b.on_demand)] {
        let mut specs: Vec<ProcessorSpec> = STOCK.iter().map(|s| b.spec(rt, s, "{}")).collect();
        specs.extend((0..3).map(|_| b.spec(rt, "last-message", "{}")));
        assert_eq!(specs.len(), 10);
        // Built and dropped again: a pool slot goes back to the pool on drop,
        // so the teardown is part of what a task costs.
        let mut task = 0u64;
        g.bench_function(name, |bench| {
            bench.iter(|| {
                task += 1;
                let p = Pipeline::new(rt, specs.clone(), "bench/task", task, 50).unwrap_or_else(|(n, f)| panic!("{n}: {f}"));
                black_box(&p);
            })
        });
    }
    g.finish();
}

// ---- 6: hot swap ----

fn swap_replace(c: &mut Criterion, b: &Bench) {
    let mut g = quick(c, "swap");
    let counter = b.spec(&b.pooling, "counter", "{}");
    let mut p = b.pipeline(&b.pooling, vec![counter.clone()]);
    let mut ctx = context(10);
    run_checked(&mut p, Hook::StepStart, &mut ctx);
    let r = p.swap(Swap::Replace { target: "counter".into(), spec: counter.clone() });
    assert!(r.error.is_none() && r.state_bytes > 0, "a swap of counter failed: {r:?}");
    g.bench_function("replace", |bench| bench.iter(|| black_box(p.swap(Swap::Replace { target: "counter".into(), spec: counter.clone() }))));
    g.finish();
}

// ---- 7: code cache ----

fn load_cache_vs_compile(c: &mut Criterion, b: &Bench) {
    let bytes = b.bytes("loop-guard");
    let id = Runtime::id_of(&bytes);
    let dir = tempfile::tempdir_in(b.code_cache.parent().expect("the code cache is under target/")).expect("a temporary code cache");
    let runtime = |cache_dir: Option<PathBuf>| {
        Runtime::new(RuntimeConfig { pooling: true, max_instances: 16, cache_dir, ..Default::default() }).expect("a runtime for the load benchmark")
    };
    let cached = runtime(Some(dir.path().to_path_buf()));
    assert!(!cached.load(&bytes).expect("loop-guard loads").from_cache, "a fresh cache cannot hold loop-guard");
    cached.evict(&id);
    assert!(cached.load(&bytes).expect("loop-guard loads").from_cache, "the second load should come from the code cache");
    let uncached = runtime(None);

    let mut g = c.benchmark_group("load");
    g.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    g.bench_function("cache", |bench| {
        bench.iter(|| {
            cached.evict(&id);
            black_box(cached.load(&bytes).expect("loop-guard loads"))
        })
    });
    g.bench_function("compile", |bench| {
        bench.iter(|| {
            uncached.evict(&id);
            black_box(uncached.load(&bytes).expect("loop-guard loads"))
        })
    });
    g.finish();
}

// ---- 9: memory per live instance ----

/// Resident set size of this process, in bytes (`VmRSS` of /proc/self/status).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resident memory per live loop-guard instance, each having served one
/// before-tool and one after-tool call, for both allocators. Written to
/// `kiln-memory.json` in criterion's output directory for the summary.
fn memory_per_instance(b: &Bench, out_dir: &Path) {
    let Some(_) = resident_bytes() else {
        eprintln!("memory/loop-guard: skipped, /proc/self/status is not readable here");
        return;
    };
    let w = Workload::shop();
    let mut results = serde_json::Map::new();
    for (name, rt) in [("pooling", &b.pooling), ("on-demand", &b.on_demand)] {
        let loaded = b.load(rt, "loop-guard");
        let live = |seed: u64| {
            let mut instance = Instance::new(rt, loaded.clone(), InstanceSpec::default(), seed, VirtualClock::default())
                .unwrap_or_else(|f| panic!("loop-guard could not start: {f}"));
            let mut ctx = context(10);
            let facts = Default::default();
            let (call, observation) = w.at(seed as usize);
            ctx.call = Some(call.clone());
            assert!(instance.call_hook(Hook::BeforeTool, &mut ctx, &facts).fault.is_none());
            ctx.outcome = Some(ToolOutcome { content: observation.to_string(), is_error: false });
            assert!(instance.call_hook(Hook::AfterTool, &mut ctx, &facts).fault.is_none());
            instance
        };
        // One instance first, so one-time costs (code pages, lazy statics) are not counted.
        drop(live(0));
        let before = resident_bytes().unwrap_or(0);
        let instances: Vec<Instance> = (1..=MEMORY_INSTANCES as u64).map(live).collect();
        let after = resident_bytes().unwrap_or(0);
        let per_instance = after.saturating_sub(before) / MEMORY_INSTANCES as u64;
        drop(instances);
        println!("memory/loop-guard/{name}: {MEMORY_INSTANCES} live instances, {} KiB resident each", per_instance / 1024);
        results.insert(
            name.into(),
            serde_json::json!({ "instances": MEMORY_INSTANCES, "resident_bytes_before": before, "resident_bytes_after": after, "resident_bytes_per_instance": per_instance }),
        );
    }
    let path = out_dir.join("kiln-memory.json");
    let written = std::fs::create_dir_all(out_dir).and_then(|_| std::fs::write(&path, serde_json::to_vec_pretty(&results).expect("JSON")));
    if let Err(e) = written {
        eprintln!("memory/loop-guard: cannot write {}: {e}", path.display());
    }
}

/// 1,000 tasks at once with 10 processors each (PERFORMANCE.md: within 4 GiB
/// on this 2-core machine): every task's pipeline is instantiated and kept
/// alive, then one step (step-start, before-model, before-tool, after-tool,
/// step-end) runs in each, so every instance has been entered and touched
/// its memory. The runtime's pool is sized for them, as `kiln run` sizes it
/// for `-j`. Written to `kiln-concurrency.json` for the summary.
fn concurrent_tasks(b: &Bench, out_dir: &Path) {
    let Some(start) = resident_bytes() else {
        eprintln!("concurrency/tasks: skipped, /proc/self/status is not readable here");
        return;
    };
    let processors = STOCK.len() + 3;
    let rt = Runtime::new(RuntimeConfig {
        max_instances: (CONCURRENT_TASKS * processors) as u32,
        cache_dir: Some(b.code_cache.clone()),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("cannot build a runtime for {CONCURRENT_TASKS} tasks: {e}"));
    let mut specs: Vec<ProcessorSpec> = STOCK.iter().map(|s| b.spec(&rt, s, "{}")).collect();
    specs.extend((0..3).map(|_| b.spec(&rt, "last-message", "{}")));
    let before = resident_bytes().unwrap_or(0);
    let clock = std::time::Instant::now();
    let mut tasks: Vec<(Pipeline, Context)> = (0..CONCURRENT_TASKS)
        .map(|i| {
            let p = Pipeline::new(&rt, specs.clone(), &format!("bench/{i}"), i as u64, 50)
                .unwrap_or_else(|(n, f)| panic!("task {i} of {CONCURRENT_TASKS}: {n}: {f}"));
            (p, context(10))
        })
        .collect();
    let instantiated = clock.elapsed();
    let w = Workload::shop();
    let clock = std::time::Instant::now();
    for (i, (p, ctx)) in tasks.iter_mut().enumerate() {
        let (call, observation) = w.at(i);
        run_checked(p, Hook::StepStart, ctx);
        run_checked(p, Hook::BeforeModel, ctx);
        ctx.call = Some(call.clone());
        run_checked(p, Hook::BeforeTool, ctx);
        ctx.outcome = Some(ToolOutcome { content: observation.to_string(), is_error: false });
        run_checked(p, Hook::AfterTool, ctx);
        run_checked(p, Hook::StepEnd, ctx);
    }
    let stepped = clock.elapsed();
    let after = resident_bytes().unwrap_or(0);
    drop(tasks);
    let per_task = after.saturating_sub(before) / CONCURRENT_TASKS as u64;
    println!(
        "concurrency/tasks: {CONCURRENT_TASKS} tasks x {processors} processors live: process resident {} MiB \
         ({} KiB per task), instantiated in {:.0} ms, one step each in {:.0} ms",
        after >> 20,
        per_task >> 10,
        instantiated.as_secs_f64() * 1e3,
        stepped.as_secs_f64() * 1e3
    );
    let result = serde_json::json!({
        "tasks": CONCURRENT_TASKS,
        "processors_per_task": processors,
        "resident_bytes_at_start": start,
        "resident_bytes_before": before,
        "resident_bytes_after": after,
        "resident_bytes_per_task": per_task,
        "instantiate_seconds": instantiated.as_secs_f64(),
        "step_seconds": stepped.as_secs_f64(),
    });
    let path = out_dir.join("kiln-concurrency.json");
    let written = std::fs::create_dir_all(out_dir).and_then(|_| std::fs::write(&path, serde_json::to_vec_pretty(&result).expect("JSON")));
    if let Err(e) = written {
        eprintln!("concurrency/tasks: cannot write {}: {e}", path.display());
    }
}
