//! The agent loop: one task, from task-start to task-end.
//!
//! The sequence is DESIGN.md's: task-start, then steps of (step-start,
//! before-model, model call, after-model, for each tool call: before-tool,
//! tool, after-tool; step-end) until the environment is done, the step
//! budget ends or a processor interrupts; then task-end, always.
//!
//! The loop changes the context only through [`Task::mutate`]-style helpers
//! that also write the matching trace event, so folding a trace rebuilds the
//! exact input of every hook call. The per-step cost of the harness is
//! independent of the history's length: the conversation is moved, never
//! copied, into the model request and into each processor's store.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::chat::{Message, ToolCall, ToolSpec};
use crate::env::{Environment, Score};
use crate::mcp::McpTools;
use crate::models::{Model, ModelRequest, Usage};
use crate::sandbox::{Context, Hook, HookOutcome, Pipeline, ProcessorSpec, Reply, Runtime, Swap, ToolOutcome, Verdict};
use crate::trace::{EndReason, Event, Trace};

/// How the harness shapes a task, beyond its processors.
#[derive(Clone, Debug, Default)]
pub struct Shape {
    /// System prompt template; `{tools}` becomes the tool names.
    pub system: String,
    /// Tools hidden from the model.
    pub deny: Vec<String>,
}

/// Everything needed to run one task.
pub struct TaskSpec {
    pub env_name: String,
    pub task: String,
    pub seed: u64,
    /// Overrides the environment's step budget when set.
    pub max_steps: Option<u32>,
    pub harness_id: String,
    pub shape: Shape,
    pub processors: Vec<ProcessorSpec>,
    /// Swaps to apply at the start of a given step.
    pub swaps: Vec<(u32, Swap)>,
    /// Record durations as zero, so identical runs give identical traces.
    pub deterministic: bool,
    /// Tools from MCP servers, shared by the run's tasks.
    pub mcp: Vec<Arc<Mutex<McpTools>>>,
}

/// How a task went.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub reason: EndReason,
    pub detail: Option<String>,
    pub score: Score,
    pub steps: u32,
    pub usage: Usage,
    /// Faults per processor name.
    pub faults: Vec<(String, String)>,
}

/// Run one task to its end. Never panics on bad processors, models or environments.
pub async fn run_task(rt: &Runtime, model: &dyn Model, env: &mut dyn Environment, spec: TaskSpec) -> (Outcome, Trace) {
    let mut t = Task { trace: Trace::default(), step: 0, deterministic: spec.deterministic, faults: Vec::new(), mcp: Vec::new() };
    let end = |t: &mut Task, reason, detail: Option<String>, score, usage| {
        t.trace.push(Event::TaskEnd { steps: t.step, reason, detail: detail.clone(), score, usage });
        let faults = std::mem::take(&mut t.faults);
        (Outcome { reason, detail, score, steps: t.step, usage, faults }, std::mem::take(&mut t.trace))
    };

    let start = match env.reset(&spec.task, spec.seed) {
        Ok(s) => s,
        Err(e) => return end(&mut t, EndReason::Errored, Some(e.to_string()), Score::default(), Usage::default()),
    };
    let max_steps = spec.max_steps.unwrap_or(start.max_steps);
    let mut pipeline = match Pipeline::new(rt, spec.processors, &spec.task, spec.seed, max_steps) {
        Ok(p) => p,
        Err((name, f)) => {
            t.faults.push((name.clone(), f.to_string()));
            return end(&mut t, EndReason::Faulted, Some(format!("processor {name} could not start: {f}")), Score::default(), Usage::default());
        }
    };

    // Tools: the environment's, then the processors', minus the denied ones.
    let mut tools: Vec<ToolSpec> = start.tools.clone();
    tools.extend(pipeline.tools().into_iter().map(|(_, t)| t));
    for m in &spec.mcp {
        tools.extend(m.lock().unwrap_or_else(|e| e.into_inner()).specs().iter().cloned());
    }
    t.mcp = spec.mcp;
    tools.retain(|t| !spec.shape.deny.contains(&t.name));
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    let system = spec.shape.system.replace("{tools}", &names.join(", "));
    let mut ctx = Context { system, tools, ..Default::default() };
    ctx.messages.push(Message::user(start.prompt.clone()));
    t.trace.push(Event::TaskStart {
        schema: crate::trace::SCHEMA,
        env: spec.env_name.clone(),
        task: spec.task.clone(),
        seed: spec.seed,
        harness: spec.harness_id.clone(),
        model: model.describe(),
        max_steps,
        context: ctx.clone(),
        processors: pipeline.members(),
    });

    let mut usage = Usage::default();
    let mut advice: Vec<(String, String)> = Vec::new();
    let mut swaps = spec.swaps;

    let o = t.hook(&mut pipeline, Hook::TaskStart, &mut ctx);
    let mut stop: Option<(EndReason, Option<String>)> = t.stop_for(&o);

    while stop.is_none() {
        if t.step >= max_steps {
            stop = Some((EndReason::Budget, Some(format!("the step budget of {max_steps} ran out"))));
            break;
        }
        let step = t.step;
        pipeline.set_step(step);
        // Swaps land at step boundaries only, never inside a hook call.
        let (due, later): (Vec<_>, Vec<_>) = swaps.into_iter().partition(|(s, _)| *s <= step);
        swaps = later;
        for (_, swap) in due {
            let report = pipeline.swap(swap);
            t.trace.push(Event::Swap { step, report });
        }

        let o = t.hook(&mut pipeline, Hook::StepStart, &mut ctx);
        if let Some(s) = t.stop_for(&o) {
            stop = Some(s);
            break;
        }
        for (who, text) in advice.drain(..) {
            t.append(&mut ctx, Message::user(format!("[advice from {who}] {text}")));
        }
        let o = t.hook(&mut pipeline, Hook::BeforeModel, &mut ctx);
        advice.extend(o.advice.iter().cloned());
        if let Some(s) = t.stop_for(&o) {
            stop = Some(s);
            break;
        }

        // The model call: the conversation moves into the request and back.
        let mut request = ModelRequest {
            system: std::mem::take(&mut ctx.system),
            messages: std::mem::take(&mut ctx.messages),
            tools: std::mem::take(&mut ctx.tools),
            seed: spec.seed ^ (step as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ..Default::default()
        };
        let began = Instant::now();
        let reply = model.complete(&request).await;
        let nanos = t.nanos(began);
        ctx.system = std::mem::take(&mut request.system);
        ctx.messages = std::mem::take(&mut request.messages);
        ctx.tools = std::mem::take(&mut request.tools);
        let response = match reply {
            Ok(r) => r,
            Err(e) => {
                t.trace.push(Event::ModelCall { step, model: model.describe(), text: String::new(), calls: vec![], usage: Usage::default(), nanos, error: Some(e.to_string()) });
                stop = Some((EndReason::Errored, Some(e.to_string())));
                break;
            }
        };
        usage.input_tokens += response.usage.input_tokens;
        usage.output_tokens += response.usage.output_tokens;
        t.trace.push(Event::ModelCall {
            step,
            model: model.describe(),
            text: response.text.clone(),
            calls: response.calls.clone(),
            usage: response.usage,
            nanos,
            error: None,
        });
        t.set_reply(&mut ctx, Some(Reply { text: response.text, calls: response.calls }));
        let o = t.hook(&mut pipeline, Hook::AfterModel, &mut ctx);
        advice.extend(o.advice.iter().cloned());
        let reply = ctx.reply.clone().unwrap_or_default();
        t.set_reply(&mut ctx, None);
        match (&o.verdict, t.stop_for(&o)) {
            (_, Some(s)) => {
                stop = Some(s);
                break;
            }
            (Verdict::Block(reason), _) => {
                let who = o.by.clone().unwrap_or_default();
                t.append(&mut ctx, Message::user(format!("[blocked by {who}] {reason}")));
            }
            _ => {
                t.append(&mut ctx, Message::assistant(reply.text.clone(), reply.calls.clone()));
                if reply.calls.is_empty() {
                    // No tool call: the model's final answer.
                    env.finish(&reply.text);
                    let reason = if env.done() { EndReason::Done } else { EndReason::Stopped };
                    stop = Some((reason, None));
                }
                for call in &reply.calls {
                    if stop.is_some() {
                        break;
                    }
                    if let Some(s) = t.tool_call(&mut pipeline, env, &mut ctx, call, &mut advice) {
                        stop = Some(s);
                    }
                    if env.done() {
                        break;
                    }
                }
            }
        }
        if stop.is_none() {
            let o = t.hook(&mut pipeline, Hook::StepEnd, &mut ctx);
            advice.extend(o.advice.iter().cloned());
            if let Some(s) = t.stop_for(&o) {
                stop = Some(s);
            }
        }
        t.trace.push(Event::StepEnd { step });
        t.step += 1;
        if stop.is_none() && env.done() {
            stop = Some((EndReason::Done, None));
        }
    }

    let (reason, detail) = stop.unwrap_or((EndReason::Done, None));
    // task-end always runs; it is read-only, so its verdict changes nothing.
    let _ = t.hook(&mut pipeline, Hook::TaskEnd, &mut ctx);
    let score = env.score();
    end(&mut t, reason, detail, score, usage)
}

struct Task {
    trace: Trace,
    step: u32,
    deterministic: bool,
    faults: Vec<(String, String)>,
    mcp: Vec<Arc<Mutex<McpTools>>>,
}

impl Task {
    fn nanos(&self, since: Instant) -> u64 {
        if self.deterministic {
            0
        } else {
            since.elapsed().as_nanos() as u64
        }
    }

    fn hook(&mut self, p: &mut Pipeline, hook: Hook, ctx: &mut Context) -> HookOutcome {
        let step = self.step;
        self.trace.push(Event::Hook { step, hook });
        let mut o = p.run(hook, ctx);
        for mut report in std::mem::take(&mut o.reports) {
            if let Some(f) = &report.fault {
                self.faults.push((report.processor.to_string(), f.kind.name().to_string()));
            }
            if self.deterministic {
                report.nanos = 0;
            }
            self.trace.push(Event::Call { step, report });
        }
        o
    }

    /// Whether a hook's outcome ends the task.
    fn stop_for(&self, o: &HookOutcome) -> Option<(EndReason, Option<String>)> {
        if let Some((name, f)) = &o.aborted {
            return Some((EndReason::Faulted, Some(format!("processor {name} faulted under the abort policy: {f}"))));
        }
        if let Verdict::Interrupt(reason) = &o.verdict {
            return Some((EndReason::Interrupted, Some(format!("{}: {reason}", o.by.as_deref().unwrap_or("?")))));
        }
        None
    }

    fn append(&mut self, ctx: &mut Context, message: Message) {
        self.trace.push(Event::Append { step: self.step, message: message.clone() });
        ctx.messages.push(message);
    }

    fn set_reply(&mut self, ctx: &mut Context, reply: Option<Reply>) {
        self.trace.push(Event::SetReply { step: self.step, reply: reply.clone() });
        ctx.reply = reply;
    }

    /// before-tool, the tool, after-tool. Returns a reason to stop, if any.
    fn tool_call(
        &mut self,
        p: &mut Pipeline,
        env: &mut dyn Environment,
        ctx: &mut Context,
        call: &ToolCall,
        advice: &mut Vec<(String, String)>,
    ) -> Option<(EndReason, Option<String>)> {
        let step = self.step;
        self.trace.push(Event::SetCall { step, call: Some(call.clone()), answer: None });
        ctx.call = Some(call.clone());
        ctx.answer = None;
        let o = self.hook(p, Hook::BeforeTool, ctx);
        advice.extend(o.advice.iter().cloned());
        if let Some(s) = self.stop_for(&o) {
            return Some(s);
        }
        let call = ctx.call.clone().unwrap_or_else(|| call.clone());
        let began = Instant::now();
        let (by, content, is_error) = if let Verdict::Block(reason) = &o.verdict {
            let who = o.by.clone().unwrap_or_default();
            (format!("blocked:{who}"), format!("[blocked by {who}] {reason}"), true)
        } else if let Some(answer) = ctx.answer.clone() {
            ("answered".to_string(), answer, false)
        } else if let Some((result, mut report)) = p.call_tool(&call.name, &call.arguments, ctx) {
            let by = format!("processor:{}", report.processor);
            if self.deterministic {
                report.nanos = 0;
            }
            if let Some(f) = &report.fault {
                self.faults.push((report.processor.to_string(), f.kind.name().to_string()));
            }
            self.trace.push(Event::ProcessorTool { step, name: call.name.clone(), arguments: call.arguments.clone(), result: result.clone(), report });
            match result {
                Ok(s) => (by, s, false),
                Err(e) => (by, e, true),
            }
        } else if let Some(m) = self.mcp.iter().find(|m| m.lock().unwrap_or_else(|e| e.into_inner()).contains(&call.name)) {
            let result = m.lock().unwrap_or_else(|e| e.into_inner()).call(&call.name, &call.arguments);
            match result {
                Ok(obs) => ("mcp".to_string(), obs.content, obs.is_error),
                Err(e) => {
                    let detail = e.to_string();
                    self.trace.push(Event::ToolCall { step, call, by: "mcp".into(), content: detail.clone(), is_error: true, nanos: 0 });
                    return Some((EndReason::Errored, Some(detail)));
                }
            }
        } else {
            match env.step(&call) {
                Ok(obs) => ("env".to_string(), obs.content, obs.is_error),
                Err(e) => {
                    let detail = e.to_string();
                    self.trace.push(Event::ToolCall { step, call, by: "env".into(), content: detail.clone(), is_error: true, nanos: 0 });
                    return Some((EndReason::Errored, Some(detail)));
                }
            }
        };
        let nanos = self.nanos(began);
        self.trace.push(Event::ToolCall { step, call: call.clone(), by, content: content.clone(), is_error, nanos });
        let outcome = ToolOutcome { content, is_error };
        self.trace.push(Event::SetOutcome { step, outcome: Some(outcome.clone()) });
        ctx.outcome = Some(outcome);
        let o = self.hook(p, Hook::AfterTool, ctx);
        advice.extend(o.advice.iter().cloned());
        let stop = self.stop_for(&o);
        let mut content = ctx.outcome.take().map(|o| o.content).unwrap_or_default();
        if let Verdict::Block(reason) = &o.verdict {
            content = format!("[blocked by {}] {reason}", o.by.as_deref().unwrap_or("?"));
        }
        self.trace.push(Event::SetOutcome { step, outcome: None });
        self.trace.push(Event::SetCall { step, call: None, answer: None });
        ctx.call = None;
        ctx.answer = None;
        self.append(ctx, Message::tool(call.id.clone(), content));
        stop
    }
}

/// Shared handles for running many tasks.
#[derive(Clone)]
pub struct Shared {
    pub rt: Runtime,
    pub model: Arc<dyn Model>,
}
pub mod replay;
