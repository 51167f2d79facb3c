//! `kiln demo`: the stock processors at work, on built-in defaults.
//!
//! Part one runs one `shop` task through the real agent loop with a scripted
//! model that makes the mistakes small models make (malformed JSON, an
//! invented tool name, a repetition loop) and prints every hook call from the
//! trace: processor, verdict, edits, fuel and time. Part two runs a batch of
//! held-out tasks with the simulated model, with and without the stock
//! processors, and prints both summaries.

use std::path::Path;
use std::sync::Arc;

use super::{open_store, runtime, CliResult};
use crate::agent::{run_task, TaskSpec};
use crate::chat::ToolCall;
use crate::models::{BoxFuture, Model, ModelError, ModelRequest, ModelResponse, Usage};
use crate::sandbox::{Edit, Runtime, Verdict};
use crate::trace::Event;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Held-out tasks in the batch comparison.
    #[arg(long, default_value_t = 30)]
    pub tasks: usize,
    /// Skip the batch comparison.
    #[arg(long)]
    pub no_batch: bool,
}

/// A model that plays a fixed script of replies, one per call.
struct Scripted {
    replies: Vec<ModelResponse>,
    next: std::sync::atomic::AtomicUsize,
}

impl Model for Scripted {
    fn describe(&self) -> String {
        "scripted".into()
    }
    fn complete<'a>(&'a self, _: &'a ModelRequest) -> BoxFuture<'a, Result<ModelResponse, ModelError>> {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let r = self.replies.get(i).cloned().unwrap_or_else(|| ModelResponse { text: "I am done.".into(), ..Default::default() });
        Box::pin(async move { Ok(r) })
    }
}

fn call(name: &str, args: &str, i: usize) -> ModelResponse {
    ModelResponse {
        text: String::new(),
        calls: vec![ToolCall { id: format!("call-{i}"), name: name.into(), arguments: args.into() }],
        usage: Usage { input_tokens: 100, output_tokens: 10 },
        raw: None,
    }
}

fn script() -> Vec<ModelResponse> {
    vec![
        call("search", "{'query': 'shoes',}", 0),
        call("search_products", r#"{"query": "red shoes"}"#, 1),
        call("next_page", "{}", 2),
        call("next_page", "{}", 3),
        call("next_page", "{}", 4),
        call("next_page", "{}", 5),
        call("note_write", r#"{"key": "plan", "text": "compare the first two results"}"#, 6),
        ModelResponse { text: "I could not find it.".into(), ..Default::default() },
    ]
}

pub fn execute(store_dir: &Path, args: Args) -> CliResult {
    let store = open_store(store_dir)?;
    let rt = runtime(&store)?;
    let stock = super::run::resolve_harness(&store, &rt, "stock")?;
    let stat = super::run::resolve_harness(&store, &rt, "static")?;
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let suite = crate::env::builtin("shop").expect("shop is built in");
    let task = suite.tasks(crate::env::Split::Test)[0].clone();
    let mut env = suite.make()?;
    let model = Scripted { replies: script(), next: Default::default() };
    let spec = TaskSpec {
        env_name: "shop".into(),
        task: task.clone(),
        seed: 1,
        max_steps: Some(12),
        harness_id: stock.id.clone(),
        shape: stock.shape.clone(),
        processors: stock.processors.clone(),
        swaps: vec![],
        mcp: vec![],
        deterministic: false,
    };
    let (outcome, trace) = tokio.block_on(run_task(&rt, &model, env.as_mut(), spec));
    println!("== one shop task ({task}) with a scripted model that makes small-model mistakes ==\n");
    println!("{:>4}  {:<12}  {:<18}  {:<22}  {:<44}  {:>9}  {:>8}", "step", "hook", "processor", "verdict", "edits", "fuel", "time");
    for e in &trace.events {
        match e {
            Event::Call { step, report } => {
                let verdict = match (&report.fault, &report.verdict) {
                    (Some(f), _) => format!("FAULT {}", f.kind.name()),
                    (None, Some(Verdict::Pass)) => "pass".into(),
                    (None, Some(Verdict::Block(r))) => format!("block: {}", clip(r, 15)),
                    (None, Some(Verdict::Interrupt(r))) => format!("interrupt: {}", clip(r, 11)),
                    (None, None) => "-".into(),
                };
                let edits = if report.edits.is_empty() { "-".to_string() } else { report.edits.iter().map(describe_edit).collect::<Vec<_>>().join("; ") };
                println!(
                    "{:>4}  {:<12}  {:<18}  {:<22}  {:<44}  {:>9}  {:>6.1}µs",
                    step,
                    report.hook.name(),
                    report.processor,
                    clip(&verdict, 22),
                    clip(&edits, 44),
                    report.fuel,
                    report.nanos as f64 / 1000.0
                );
            }
            Event::ModelCall { step, calls, text, .. } => {
                let what = calls.iter().map(|c| format!("{}({})", c.name, c.arguments)).collect::<Vec<_>>().join(", ");
                println!("{:>4}  {:<12}  {}", step, "model", clip(if what.is_empty() { text } else { &what }, 100));
            }
            Event::ToolCall { step, call, content, by, .. } => {
                println!("{:>4}  {:<12}  {} -> {} [{}]", step, "tool", call.name, clip(&content.replace('\n', " "), 70), by);
            }
            _ => {}
        }
    }
    let id = trace.save(&store)?;
    println!(
        "\nended: {} after {} steps; reward {:.2}; trace {} in {}",
        outcome.reason.name(),
        outcome.steps,
        outcome.score.reward,
        id.short(),
        store_dir.display()
    );
    if args.no_batch {
        return Ok(());
    }
    batch(&tokio, &rt, &[("static", &stat), ("stock", &stock)], args.tasks)
}

fn batch(tokio: &tokio::runtime::Runtime, rt: &Runtime, harnesses: &[(&str, &super::run::Resolved)], n: usize) -> CliResult {
    let model: Arc<dyn Model> = Arc::from(crate::models::spec::parse("sim:weak")?);
    for env_name in ["shop", "house"] {
        let suite = crate::env::builtin(env_name).expect("built in");
        let tasks: Vec<String> = suite.tasks(crate::env::Split::Test).into_iter().take(n).collect();
        println!("\n== {env_name}: {} held-out tasks, sim:weak (a simulator, not an LLM) ==", tasks.len());
        for (label, h) in harnesses {
            let started = std::time::Instant::now();
            let (mut ok, mut reward, mut steps) = (0usize, 0.0f64, 0u32);
            for task in &tasks {
                let mut env = suite.make()?;
                let spec = TaskSpec {
                    env_name: env_name.into(),
                    task: task.clone(),
                    seed: 1,
                    max_steps: None,
                    harness_id: h.id.clone(),
                    shape: h.shape.clone(),
                    processors: h.processors.clone(),
                    swaps: vec![],
                    mcp: vec![],
                    deterministic: true,
                };
                let (o, _) = tokio.block_on(run_task(rt, model.as_ref(), env.as_mut(), spec));
                ok += o.score.success as usize;
                reward += o.score.reward;
                steps += o.steps;
            }
            let n = tasks.len().max(1) as f64;
            println!(
                "{label:<7} success {:>5.1}%   reward {:.3}   steps {:>5.1}   wall {:.2}s",
                ok as f64 * 100.0 / n,
                reward / n,
                steps as f64 / n,
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn describe_edit(e: &Edit) -> String {
    match e {
        Edit::SetSystemPrompt { .. } => "set-system-prompt".into(),
        Edit::Remove { index } => format!("remove #{index}"),
        Edit::Insert { index, .. } => format!("insert #{index}"),
        Edit::Replace { index, .. } => format!("replace #{index}"),
        Edit::SetLastUser { .. } => "set-last-user".into(),
        Edit::AppendUser { content } => format!("append-user \"{}\"", clip(content, 20)),
        Edit::HideTool { name } => format!("hide {name}"),
        Edit::SetText { .. } => "set-text".into(),
        Edit::SetCalls { calls } => format!("set-calls {}", calls.iter().map(|c| format!("{}({})", c.name, c.arguments)).collect::<Vec<_>>().join(",")),
        Edit::SetArguments { arguments } => format!("set-arguments {arguments}"),
        Edit::Respond { .. } => "respond".into(),
        Edit::SetResult { content } => format!("set-result ({} chars)", content.len()),
        Edit::SlotSet { key, .. } => format!("slot {key}"),
        Edit::SlotRemove { key } => format!("slot -{key}"),
        Edit::Advise { text } => format!("advise \"{}\"", clip(text, 24)),
    }
}
