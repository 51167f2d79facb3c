//! Tests of the simulated model, driving it on the built-in suites through a
//! minimal agent loop with native stand-ins for the stock processors.
//!
//! The stock processors are Wasm components written elsewhere; [`Helpers`]
//! emulates what their documentation promises, following the shared text
//! conventions: goal-pin, loop-guard (advice, then blocks), tool-call repair
//! (JSON, names, calls written as text), observation trimming, and
//! step-budget (advice with `steps left`, and blocking a final answer given
//! while steps remain).

use super::*;
use crate::chat::{Message, Role};
use crate::env::house::HouseSuite;
use crate::env::shop::ShopSuite;
use crate::env::{Score, Split, Suite};

const SYSTEM: &str = "You are an agent. Use the tools to reach the goal.";

/// Which processor behaviours the test loop applies.
#[derive(Clone, Copy, Debug)]
struct Helpers {
    /// goal-pin: pin the goal when it is not in the last this many messages.
    goal_pin: Option<usize>,
    /// loop-guard: advise after two identical calls, block the third.
    loop_guard: bool,
    /// tool-call-repair: fix JSON, map names, parse calls written as text.
    repair: bool,
    /// observation trimming: cap tool results at this many chars.
    trim: Option<usize>,
    /// step-budget: advise when steps run low; block early final answers.
    budget: bool,
}

const BARE: Helpers = Helpers { goal_pin: None, loop_guard: false, repair: false, trim: None, budget: false };
const STOCK: Helpers = Helpers { goal_pin: Some(6), loop_guard: true, repair: true, trim: Some(420), budget: true };

struct Outcome {
    score: Score,
    transcript: Vec<Message>,
    responses: Vec<ModelResponse>,
}

fn goal_line(text: &str) -> bool {
    text.lines().any(|l| l.trim_start().starts_with("Goal:") || l.trim_start().starts_with("Goal (pinned):"))
}

fn run(sim: &Sim, suite: &dyn Suite, task: &str, seed: u64, helpers: Helpers) -> Outcome {
    let mut env = suite.make().unwrap();
    let start = env.reset(task, seed).unwrap();
    let instruction = start.prompt.lines().next().unwrap().trim_start_matches("Goal:").trim().to_string();
    let tool_names: Vec<String> = start.tools.iter().map(|t| t.name.clone()).collect();
    let mut messages = vec![Message::user(start.prompt.clone())];
    let mut responses = Vec::new();
    let mut advice: Vec<(&str, String)> = Vec::new();
    let mut executed: Vec<ToolCall> = Vec::new();
    for step in 0..start.max_steps {
        for (from, text) in advice.drain(..) {
            messages.push(Message::user(format!("[advice from {from}] {text}")));
        }
        if let Some(window) = helpers.goal_pin {
            let recent = &messages[messages.len().saturating_sub(window)..];
            if !recent.iter().any(|m| goal_line(&m.content)) {
                messages.push(Message::user(format!("Goal (pinned): {instruction}")));
            }
        }
        let request = ModelRequest {
            system: SYSTEM.to_string(),
            messages: messages.clone(),
            tools: start.tools.clone(),
            seed,
            ..ModelRequest::default()
        };
        let mut response = sim.respond(&request);
        responses.push(response.clone());
        if helpers.repair {
            repair(&mut response, &tool_names);
        }
        let steps_left = start.max_steps - step - 1;
        if response.calls.is_empty() {
            if helpers.budget && !env.done() {
                messages.push(Message::user(format!(
                    "[blocked by step-budget] {steps_left} steps left: the task is not finished yet; keep going."
                )));
                continue;
            }
            messages.push(Message::assistant(response.text, Vec::new()));
            break;
        }
        messages.push(Message::assistant(response.text.clone(), response.calls.clone()));
        for call in &response.calls {
            let repeats = executed.iter().rev().take_while(|c| context::same_call(c, call)).count();
            let content = if helpers.loop_guard && repeats >= 2 {
                format!("[blocked by loop-guard] You repeated {}[{}] 3 times; try something different.", call.name, call.arguments)
            } else {
                let observation = env.step(call).unwrap();
                match helpers.trim {
                    Some(cap) if observation.content.len() > cap => {
                        let cut = (0..=cap).rev().find(|&i| observation.content.is_char_boundary(i)).unwrap();
                        format!("{}\n[trimmed {} chars]", &observation.content[..cut], observation.content.len() - cut)
                    }
                    _ => observation.content,
                }
            };
            executed.push(call.clone());
            messages.push(Message::tool(call.id.clone(), content));
            if env.done() {
                break;
            }
        }
        if env.done() {
            break;
        }
        if helpers.loop_guard {
            if let [.., a, b] = executed.as_slice() {
                if context::same_call(a, b) {
                    advice.push(("loop-guard", format!("You repeated {}[{}] 2 times; try something different.", b.name, b.arguments)));
                }
            }
        }
        if helpers.budget && steps_left <= start.max_steps / 4 {
            advice.push(("step-budget", format!("{steps_left} steps left: finish now.")));
        }
    }
    Outcome { score: env.score(), transcript: messages, responses }
}

/// tool-call-repair, natively: calls written as text, invented names, JSON.
fn repair(response: &mut ModelResponse, tools: &[String]) {
    if response.calls.is_empty() {
        if let Some(call) = call_in_text(&response.text, tools) {
            response.calls.push(call);
        }
    }
    for call in &mut response.calls {
        if !tools.contains(&call.name) {
            if let Some(name) = nearest_name(&call.name, tools) {
                call.name = name;
            }
        }
        if serde_json::from_str::<serde_json::Value>(&call.arguments).is_err() {
            if let Some(fixed) = repair_json(&call.arguments) {
                call.arguments = fixed;
            }
        }
    }
}

fn call_in_text(text: &str, tools: &[String]) -> Option<ToolCall> {
    let open = text.find("[{")?;
    let close = text.rfind("}]")?;
    let name: String = text[..open].chars().rev().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    let name: String = name.chars().rev().collect();
    let name = if tools.contains(&name) { name } else { nearest_name(&name, tools)? };
    let arguments = repair_json(&text[open + 1..close + 1])?;
    Some(ToolCall { id: "repaired".into(), name, arguments })
}

fn nearest_name(name: &str, tools: &[String]) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    if let Some(contained) = tools.iter().filter(|t| lower.contains(t.as_str())).max_by_key(|t| t.len()) {
        return Some(contained.clone());
    }
    tools.iter().map(|t| (levenshtein(&lower, t), t)).filter(|(d, _)| *d <= 2).min().map(|(_, t)| t.clone())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != b[j])).min(row[j] + 1).min(row[j + 1] + 1);
            previous = current;
        }
    }
    row[b.len()]
}

fn repair_json(text: &str) -> Option<String> {
    let mut fixed = text.trim().to_string();
    if !fixed.contains('"') {
        fixed = fixed.replace('\'', "\"");
    }
    let opens = fixed.matches('{').count();
    let closes = fixed.matches('}').count();
    for _ in closes..opens {
        fixed.push('}');
    }
    let fixed = fixed.replace(",}", "}").replace(", }", "}");
    serde_json::from_str::<serde_json::Value>(&fixed).ok().map(|v| v.to_string())
}

fn success_rate(profile: &str, suite: &dyn Suite, tasks: usize, helpers: Helpers) -> f64 {
    let sim = Sim::from_spec(profile).unwrap();
    let ids = suite.tasks(Split::Test);
    let solved = ids.iter().take(tasks).filter(|task| run(&sim, suite, task, 0, helpers).score.success).count();
    solved as f64 / tasks.min(ids.len()) as f64
}

#[test]
#[ignore = "prints a table for tuning the profiles"]
fn print_success_rates() {
    let shop = ShopSuite::new();
    let house = HouseSuite::new();
    for profile in ["perfect", "strong", "mid", "weak"] {
        for (name, suite) in [("shop", &shop as &dyn Suite), ("house", &house as &dyn Suite)] {
            let bare = success_rate(profile, suite, 100, BARE);
            let stock = success_rate(profile, suite, 100, STOCK);
            println!("{profile:8} {name:6} bare {bare:.2} stock {stock:.2}");
        }
    }
}

#[test]
fn print_one() {
    let shop = ShopSuite::new();
    let sim = Sim::from_spec("weak").unwrap();
    let out = run(&sim, &shop, "shop/test/1", 0, BARE);
    for m in &out.transcript {
        println!("--- {:?} {}", m.role, m.content);
        for c in &m.calls { println!("    CALL {} {}", c.name, c.arguments); }
    }
    println!("{:?}", out.score);
    let _ = Role::User;
}
