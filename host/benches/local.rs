//! `make bench` for the local GGUF backend: prompt-processing and generation
//! tokens per second of the default model, and seconds per step of `house`
//! tasks under the static harness, with free generation and with choosing
//! among admissible actions by likelihood.
//!
//! Skips (and says so) when the model is absent: `make setup-model` fetches
//! it. Wall-clock numbers on a shared 2-core machine move with its load, so
//! the load average is printed beside them. The numbers are also written to
//! `$CRITERION_HOME/kiln-local.json` (default `target/criterion`).
//!
//! A filter argument (`make bench BENCH=...`) that does not match `local`
//! skips this bench, as criterion filters skip the others.

use std::time::Instant;

use kiln::agent::{run_task, Shape, TaskSpec};
use kiln::env::{Split, Suite};
use kiln::models::local::{default_model_path, Local, Sampling, Turn};
use kiln::models::Model;
use kiln::sandbox::{Runtime, RuntimeConfig};

/// The static harness's system prompt (harnesses/static.toml).
const STATIC_SYSTEM: &str = "You are a careful agent. Work step by step: look before you act, call one tool at a time, and read each result before the next call. When the task is done, say so plainly.\n\n{tools}";
const HOUSE_TASKS: usize = 2;
const HOUSE_STEPS: u32 = 12;

fn main() {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if !filters.is_empty() && !filters.iter().any(|f| "local".contains(f.as_str()) || f.contains("local")) {
        return;
    }
    let path = default_model_path();
    if !path.is_file() {
        println!("local: skipped: {} is absent; run `make setup-model` to fetch it", path.display());
        return;
    }
    let load = load_average();
    let started = Instant::now();
    let local = Local::open("smollm2", None, None).expect("the default model loads");
    let load_secs = started.elapsed().as_secs_f64();
    println!("local: {} loaded in {load_secs:.2}s (load average {load})", local.describe());

    let (prefill_tokens, prefill_rate) = prefill_rate(&local);
    println!(
        "local: prompt processing {prefill_rate:.1} tokens/s ({prefill_tokens}-token prompt, cold cache, median of 3)"
    );
    let (generated, generation_rate) = generation_rate(&local);
    println!("local: generation        {generation_rate:.1} tokens/s ({generated} tokens, greedy)");

    let mut steps = serde_json::Map::new();
    for (mode, spec) in [("generate", "smollm2"), ("admissible", "smollm2?choose=admissible")] {
        let model = Local::open(spec, None, None).expect("the default model loads");
        let (count, secs) = house_steps(&model);
        let per_step = secs / count.max(1) as f64;
        println!("local: house step ({mode:>10}) {per_step:.2} s/step ({count} steps over {HOUSE_TASKS} tasks, static harness)");
        steps.insert(
            mode.to_owned(),
            serde_json::json!({"steps": count, "seconds": secs, "seconds_per_step": per_step}),
        );
    }
    let record = serde_json::json!({
        "model": local.describe(),
        "load_average": load,
        "load_seconds": load_secs,
        "prompt_tokens_per_second": prefill_rate,
        "prompt_tokens": prefill_tokens,
        "generation_tokens_per_second": generation_rate,
        "generated_tokens": generated,
        "house_step": steps,
    });
    let dir = std::env::var_os("CRITERION_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion"));
    if std::fs::create_dir_all(&dir).is_ok() {
        let out = dir.join("kiln-local.json");
        match std::fs::write(&out, serde_json::to_vec_pretty(&record).expect("json")) {
            Ok(()) => println!("local: wrote {}", out.display()),
            Err(e) => println!("local: could not write {}: {e}", out.display()),
        }
    }
}

/// Prompt tokens per second on a cold cache.
fn prefill_rate(local: &Local) -> (usize, f64) {
    let text: String =
        (1..=24).map(|i| format!("Step {i}: you arrive at cabinet {i}. The cabinet {i} is closed. ")).collect();
    let mut engine = local.engine().lock().unwrap();
    let prompt = engine.prompt(&[Turn { role: "user", content: text }]).unwrap();
    let sampling = Sampling { temperature: 0.0, top_p: 1.0, max_tokens: 1 };
    let mut times: Vec<f64> = (0..3)
        .map(|_| {
            engine.clear();
            let started = Instant::now();
            engine.generate(&prompt, sampling, 0, &[]).unwrap();
            started.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (prompt.len(), prompt.len() as f64 / times[1])
}

/// Generated tokens per second: a long greedy reply minus its prefill.
fn generation_rate(local: &Local) -> (usize, f64) {
    let mut engine = local.engine().lock().unwrap();
    let ask = "Write a long story about a fox who lives in a forest, with many details.";
    let prompt = engine.prompt(&[Turn { role: "user", content: ask.to_owned() }]).unwrap();
    let timed = |engine: &mut kiln::models::local::Engine, max_tokens| {
        engine.clear();
        let started = Instant::now();
        let reply = engine.generate(&prompt, Sampling { temperature: 0.0, top_p: 1.0, max_tokens }, 0, &[]).unwrap();
        (reply.tokens.len(), started.elapsed().as_secs_f64())
    };
    let (_, prefill) = timed(&mut engine, 1);
    let (tokens, total) = timed(&mut engine, 128);
    (tokens, (tokens.saturating_sub(1)) as f64 / (total - prefill).max(1e-9))
}

/// Steps and seconds over the first house test tasks with the static harness.
fn house_steps(model: &dyn Model) -> (u32, f64) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let sandbox = Runtime::new(RuntimeConfig::default()).expect("the sandbox runtime starts");
    let suite = kiln::env::house::HouseSuite::new();
    let mut steps = 0;
    let started = Instant::now();
    for task in suite.tasks(Split::Test).into_iter().take(HOUSE_TASKS) {
        let mut env = suite.make().unwrap();
        let spec = TaskSpec {
            env_name: "house".into(),
            task,
            seed: 1,
            max_steps: Some(HOUSE_STEPS),
            harness_id: "static".into(),
            shape: Shape { system: STATIC_SYSTEM.into(), deny: Vec::new() },
            processors: Vec::new(),
            swaps: Vec::new(),
            deterministic: true,
            mcp: Vec::new(),
        };
        let (outcome, _) = runtime.block_on(run_task(&sandbox, model, env.as_mut(), spec));
        steps += outcome.steps;
    }
    (steps, started.elapsed().as_secs_f64())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
