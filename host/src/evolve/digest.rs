//! The Digester: raw traces in, structured failure summaries out, each claim
//! pointing back into the trace it came from.
//!
//! It works without any model. Every task gets a [`TaskDigest`]: its
//! outcome, one primary [`Category`] from the taxonomy below, every symptom
//! found, the step where it went wrong, the processors and tools implicated,
//! and short evidence excerpts, each an [`Pointer`] (trace id, event index)
//! so that a reader (or the Evolver's prompt) can open the raw event.
//!
//! # Taxonomy (first match wins for the primary category)
//!
//! | category | detected when |
//! |---|---|
//! | `solved` | the verifier says success |
//! | `errored` | the task ended `errored` (infrastructure: not the harness's fault) |
//! | `processor-fault` | a processor call faulted |
//! | `malformed-call` | the final answer is a tool call written as text (`name[{...}]`), or a tool result says the arguments were not valid JSON |
//! | `premature-stop` | the model gave a final answer (no tool call) before the task was over |
//! | `budget-exhausted` | the step budget ran out, or a budget processor interrupted |
//! | `loop` | the same call (name + arguments) three times in a row |
//! | `unknown-tool` | a call named a tool that does not exist |
//! | `invalid-action` | two or more `Nothing happens.` observations |
//! | `goal-lost` | the goal line was out of the last 6 messages (and not in the system prompt) at the final model call |
//! | `tool-error` | two or more other tool errors |
//! | `wrong-answer` | the task ended on the agent's action, unsuccessfully, with none of the above |
//! | `interrupted` | a processor interrupted the task for another reason |
//!
//! # Actionability
//!
//! `a = Σ w(category) / n` over the n digested tasks, where `w` is 1 for
//! categories a harness edit can address, 0.5 for `wrong-answer` (a checker
//! or a prompt line may help, often not), and 0 for `solved` and `errored`.
//! So `a` is the share of tasks with a failure the harness could plausibly
//! fix; a round with `a < α` (default 0.02) is idle.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::rollout::TaskResult;
use crate::chat::Role;
use crate::trace::{EndReason, Event};

/// The failure taxonomy (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    Solved,
    Errored,
    ProcessorFault,
    MalformedCall,
    PrematureStop,
    BudgetExhausted,
    Loop,
    UnknownTool,
    InvalidAction,
    GoalLost,
    ToolError,
    WrongAnswer,
    Interrupted,
}

impl Category {
    pub fn name(self) -> &'static str {
        match self {
            Category::Solved => "solved",
            Category::Errored => "errored",
            Category::ProcessorFault => "processor-fault",
            Category::MalformedCall => "malformed-call",
            Category::PrematureStop => "premature-stop",
            Category::BudgetExhausted => "budget-exhausted",
            Category::Loop => "loop",
            Category::UnknownTool => "unknown-tool",
            Category::InvalidAction => "invalid-action",
            Category::GoalLost => "goal-lost",
            Category::ToolError => "tool-error",
            Category::WrongAnswer => "wrong-answer",
            Category::Interrupted => "interrupted",
        }
    }

    /// The weight in the actionability score.
    pub fn weight(self) -> f64 {
        match self {
            Category::Solved | Category::Errored => 0.0,
            Category::WrongAnswer => 0.5,
            _ => 1.0,
        }
    }
}

/// A place in a raw trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    /// The trace's object id (hex).
    pub trace: String,
    /// Index of the event in the trace.
    pub event: usize,
    /// A short excerpt of that event (at most 160 characters).
    pub excerpt: String,
}

/// One symptom with its evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Symptom {
    pub category: Category,
    pub step: Option<u32>,
    pub evidence: Vec<Pointer>,
}

/// What happened in one task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskDigest {
    pub task: String,
    pub seed: u64,
    pub trace: String,
    pub success: bool,
    pub reason: EndReason,
    pub steps: u32,
    /// The primary category.
    pub category: Category,
    /// The step where it went wrong (the primary symptom's).
    pub step: Option<u32>,
    /// Processors and tools implicated (`processor:NAME`, `tool:NAME`).
    pub implicated: Vec<String>,
    pub symptoms: Vec<Symptom>,
    /// The goal instruction, from the first `Goal:` line.
    pub goal: Option<String>,
    /// Invented tool names seen, with the tools that exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_tools: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_tools: Vec<String>,
}

/// A failure theme across tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Theme {
    pub category: Category,
    /// Tasks whose primary category this is.
    pub count: usize,
    /// Tasks showing this symptom at all.
    pub symptomatic: usize,
    pub tasks: Vec<String>,
    /// Up to three pointers, from different tasks.
    pub examples: Vec<Pointer>,
}

/// The whole round's digest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    pub tasks: Vec<TaskDigest>,
    /// Failure themes, most frequent first.
    pub themes: Vec<Theme>,
    pub solved: usize,
    pub actionability: f64,
}

fn excerpt(s: &str) -> String {
    let s = s.replace('\n', " ");
    if s.chars().count() <= 160 {
        return s;
    }
    let cut: String = s.chars().take(157).collect();
    format!("{cut}...")
}

/// A call written as text: `name[{...}]` or `name({...})`.
fn looks_like_text_call(text: &str) -> bool {
    let t = text.trim();
    let Some(open) = t.find(['[', '(']) else { return false };
    let name = &t[..open];
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && t[open + 1..].trim_start().starts_with('{')
}

/// Digest one task from its events.
pub fn digest_task(row: &TaskResult, events: &[Event]) -> TaskDigest {
    let ptr = |event: usize, text: &str| Pointer { trace: row.trace.clone(), event, excerpt: excerpt(text) };
    let mut symptoms: Vec<Symptom> = Vec::new();
    let mut implicated: Vec<String> = Vec::new();
    let add = |symptoms: &mut Vec<Symptom>, category: Category, step: Option<u32>, p: Pointer| {
        if let Some(s) = symptoms.iter_mut().find(|s| s.category == category) {
            if s.evidence.len() < 3 {
                s.evidence.push(p);
            }
        } else {
            symptoms.push(Symptom { category, step, evidence: vec![p] });
        }
    };
    let mut goal = None;
    let mut system = String::new();
    let mut known_tools: Vec<String> = Vec::new();
    let mut unknown_tools: Vec<String> = Vec::new();
    let mut fold = crate::trace::Fold::default();
    let mut last_calls: Vec<(String, String, usize, u32)> = Vec::new();
    let mut nothing = Vec::new();
    let mut errors = Vec::new();
    let mut last_model: Option<(usize, u32, String, bool)> = None;
    let mut goal_in_view_at_last_call = true;
    for (i, e) in events.iter().enumerate() {
        match e {
            Event::TaskStart { context, .. } => {
                system = context.system.clone();
                known_tools = context.tools.iter().map(|t| t.name.clone()).collect();
                goal = context.messages.iter().find(|m| m.role == Role::User).and_then(|m| {
                    m.content.lines().find_map(|l| l.trim_start().strip_prefix("Goal:").map(|g| g.trim().to_string()))
                });
            }
            Event::Call { step, report } => {
                if let Some(f) = &report.fault {
                    add(
                        &mut symptoms,
                        Category::ProcessorFault,
                        Some(*step),
                        ptr(i, &format!("{} faulted at {}: {}", report.processor, report.hook, f)),
                    );
                    implicated.push(format!("processor:{}", report.processor));
                }
            }
            Event::ModelCall { step, text, calls, .. } => {
                // Is the goal still in view? (the system prompt, or the last 6 messages)
                if let Some(g) = &goal {
                    let recent = fold.ctx.messages.iter().rev().take(6).any(|m| m.content.contains(g.as_str()));
                    goal_in_view_at_last_call =
                        recent || fold.ctx.system.contains(g.as_str()) || system.contains(g.as_str());
                }
                last_model = Some((i, *step, text.clone(), calls.is_empty()));
            }
            Event::ToolCall { step, call, content, is_error, .. } => {
                let sig = (call.name.clone(), call.arguments.clone());
                if last_calls.last().map(|(n, a, _, _)| (n, a)) == Some((&sig.0, &sig.1)) {
                    last_calls.push((sig.0, sig.1, i, *step));
                    if last_calls.len() >= 3 {
                        let (_, _, first, s) = last_calls[0].clone();
                        add(
                            &mut symptoms,
                            Category::Loop,
                            Some(s),
                            ptr(
                                first,
                                &format!("{}[{}] repeated {} times", call.name, call.arguments, last_calls.len()),
                            ),
                        );
                        implicated.push(format!("tool:{}", call.name));
                    }
                } else {
                    last_calls = vec![(sig.0, sig.1, i, *step)];
                }
                if *is_error {
                    let lower = content.to_ascii_lowercase();
                    if lower.contains("unknown tool") {
                        add(
                            &mut symptoms,
                            Category::UnknownTool,
                            Some(*step),
                            ptr(i, &format!("{}: {content}", call.name)),
                        );
                        if !unknown_tools.contains(&call.name) {
                            unknown_tools.push(call.name.clone());
                        }
                    } else if lower.contains("json") || lower.contains("arguments") {
                        add(
                            &mut symptoms,
                            Category::MalformedCall,
                            Some(*step),
                            ptr(i, &format!("{}[{}] -> {content}", call.name, call.arguments)),
                        );
                    } else if content.contains("Nothing happens.") {
                        nothing.push((i, *step, format!("{}[{}] -> {content}", call.name, call.arguments)));
                    } else if !content.starts_with("[blocked by") {
                        errors.push((i, *step, format!("{}[{}] -> {content}", call.name, call.arguments)));
                    }
                }
            }
            _ => {}
        }
        let _ = fold.apply(e);
    }
    if nothing.len() >= 2 {
        for (i, s, t) in nothing.iter().take(3) {
            add(&mut symptoms, Category::InvalidAction, Some(*s), ptr(*i, t));
        }
    }
    if errors.len() >= 2 {
        for (i, s, t) in errors.iter().take(3) {
            add(&mut symptoms, Category::ToolError, Some(*s), ptr(*i, t));
        }
    }
    let end = events.len().saturating_sub(1);
    match row.reason {
        EndReason::Stopped => {
            if let Some((i, step, text, _)) = &last_model {
                if looks_like_text_call(text) {
                    add(
                        &mut symptoms,
                        Category::MalformedCall,
                        Some(*step),
                        ptr(*i, &format!("final answer is a call written as text: {text}")),
                    );
                } else {
                    add(
                        &mut symptoms,
                        Category::PrematureStop,
                        Some(*step),
                        ptr(*i, &format!("final answer before the task was done: {text}")),
                    );
                }
            }
        }
        EndReason::Budget => add(
            &mut symptoms,
            Category::BudgetExhausted,
            Some(row.steps),
            ptr(end, &format!("the step budget ran out after {} steps", row.steps)),
        ),
        EndReason::Interrupted => {
            let detail = match events.last() {
                Some(Event::TaskEnd { detail, .. }) => detail.clone().unwrap_or_default(),
                _ => String::new(),
            };
            let cat = if detail.contains("budget") { Category::BudgetExhausted } else { Category::Interrupted };
            add(&mut symptoms, cat, Some(row.steps), ptr(end, &detail));
            if let Some(who) = detail.split(':').next() {
                implicated.push(format!("processor:{who}"));
            }
        }
        EndReason::Errored => add(&mut symptoms, Category::Errored, None, ptr(end, "infrastructure error")),
        _ => {}
    }
    if !row.success && !goal_in_view_at_last_call {
        if let Some((i, step, _, _)) = &last_model {
            add(
                &mut symptoms,
                Category::GoalLost,
                Some(*step),
                ptr(
                    *i,
                    &format!(
                        "goal {:?} not in the last 6 messages nor the system prompt",
                        goal.clone().unwrap_or_default()
                    ),
                ),
            );
        }
    }
    const ORDER: [Category; 12] = [
        Category::Errored,
        Category::ProcessorFault,
        Category::MalformedCall,
        Category::PrematureStop,
        Category::BudgetExhausted,
        Category::Loop,
        Category::UnknownTool,
        Category::InvalidAction,
        Category::GoalLost,
        Category::ToolError,
        Category::Interrupted,
        Category::WrongAnswer,
    ];
    let (category, step) = if row.success {
        (Category::Solved, None)
    } else {
        ORDER.iter().find_map(|c| symptoms.iter().find(|s| s.category == *c).map(|s| (*c, s.step))).unwrap_or_else(
            || {
                let p = last_model.as_ref().map(|(i, _, t, _)| ptr(*i, t)).unwrap_or_else(|| ptr(end, "task ended"));
                let step = last_model.as_ref().map(|m| m.1);
                symptoms.push(Symptom { category: Category::WrongAnswer, step, evidence: vec![p] });
                (Category::WrongAnswer, step)
            },
        )
    };
    implicated.sort();
    implicated.dedup();
    symptoms.sort_by_key(|s| s.category);
    TaskDigest {
        task: row.task.clone(),
        seed: row.seed,
        trace: row.trace.clone(),
        success: row.success,
        reason: row.reason,
        steps: row.steps,
        category,
        step,
        implicated,
        symptoms,
        goal,
        unknown_tools,
        known_tools: if category == Category::UnknownTool { known_tools } else { vec![] },
    }
}

/// Aggregate task digests into themes and the actionability score.
pub fn aggregate(tasks: Vec<TaskDigest>) -> Digest {
    let mut by: BTreeMap<Category, Theme> = BTreeMap::new();
    for t in &tasks {
        if t.success {
            continue;
        }
        for s in &t.symptoms {
            let theme = by.entry(s.category).or_insert_with(|| Theme {
                category: s.category,
                count: 0,
                symptomatic: 0,
                tasks: vec![],
                examples: vec![],
            });
            theme.symptomatic += 1;
            if t.category == s.category {
                theme.count += 1;
                theme.tasks.push(t.task.clone());
                if theme.examples.len() < 3 {
                    if let Some(p) = s.evidence.first() {
                        theme.examples.push(p.clone());
                    }
                }
            }
        }
    }
    let mut themes: Vec<Theme> = by.into_values().filter(|t| t.count > 0 && t.category != Category::Errored).collect();
    themes.sort_by(|a, b| {
        b.count.cmp(&a.count).then(b.symptomatic.cmp(&a.symptomatic)).then(a.category.cmp(&b.category))
    });
    let n = tasks.len().max(1) as f64;
    let actionability = tasks.iter().map(|t| t.category.weight()).sum::<f64>() / n;
    let solved = tasks.iter().filter(|t| t.success).count();
    Digest { tasks, themes, solved, actionability: (actionability * 1e6).round() / 1e6 }
}

impl Digest {
    /// A compact text form for prompts and the journal.
    pub fn summary(&self, max_tasks: usize) -> String {
        let mut s = format!(
            "{} of {} tasks solved; actionability {:.3}\nthemes:\n",
            self.solved,
            self.tasks.len(),
            self.actionability
        );
        for t in &self.themes {
            s.push_str(&format!(
                "- {} x{} (symptom in {}): {}\n",
                t.category.name(),
                t.count,
                t.symptomatic,
                t.tasks.join(", ")
            ));
        }
        s.push_str("failing tasks:\n");
        for t in self.tasks.iter().filter(|t| !t.success).take(max_tasks) {
            s.push_str(&format!(
                "- {} [{}] at step {:?}, ended {}\n",
                t.task,
                t.category.name(),
                t.step,
                t.reason.name()
            ));
            for sym in &t.symptoms {
                for p in sym.evidence.iter().take(2) {
                    s.push_str(&format!(
                        "    {} @ {}#{}: {}\n",
                        sym.category.name(),
                        &p.trace[..12.min(p.trace.len())],
                        p.event,
                        p.excerpt
                    ));
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_calls_are_recognized() {
        assert!(looks_like_text_call(r#"search[{"query": "red shoes"}]"#));
        assert!(looks_like_text_call(r#"view({"id": "p1"})"#));
        assert!(!looks_like_text_call("I could not find it."));
        assert!(!looks_like_text_call("[done]"));
    }

    #[test]
    fn actionability_weights_categories() {
        let t = |cat, success| TaskDigest {
            task: "t".into(),
            seed: 1,
            trace: "00".into(),
            success,
            reason: EndReason::Done,
            steps: 1,
            category: cat,
            step: None,
            implicated: vec![],
            symptoms: vec![Symptom { category: cat, step: None, evidence: vec![] }],
            goal: None,
            unknown_tools: vec![],
            known_tools: vec![],
        };
        let d = aggregate(vec![
            t(Category::Solved, true),
            t(Category::Loop, false),
            t(Category::WrongAnswer, false),
            t(Category::Errored, false),
        ]);
        assert!((d.actionability - 0.375).abs() < 1e-9, "{}", d.actionability);
        assert_eq!(d.themes.iter().map(|t| t.category).collect::<Vec<_>>(), [Category::Loop, Category::WrongAnswer]);
        assert_eq!(d.solved, 1);
    }
}
