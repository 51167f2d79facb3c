//! Tests of the simulated model, driving it on the built-in suites through a
//! minimal agent loop with native stand-ins for the stock processors.
//!
//! The stock processors are Wasm components written elsewhere; [`Helpers`]
//! emulates what their documentation promises, following the shared text
//! conventions: goal-pin, loop-guard (advice, then blocks), tool-call repair
//! (JSON, names, calls written as text), observation trimming, and
//! step-budget (advice with `steps left`, and blocking a final answer given
//! while steps remain). [`compact_with_digest`] writes history-compactor's
//! digest as its docs describe, to check that the sim reads it as memory.

use super::*;
use crate::chat::Message;
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
                format!(
                    "[blocked by loop-guard] You repeated {}[{}] 3 times; try something different.",
                    call.name, call.arguments
                )
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
                    advice.push((
                        "loop-guard",
                        format!("You repeated {}[{}] 2 times; try something different.", b.name, b.arguments),
                    ));
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
    let mut ids = suite.tasks(Split::Test);
    ids.extend(suite.tasks(Split::Train));
    let solved = ids.iter().take(tasks).filter(|task| run(&sim, suite, task, 0, helpers).score.success).count();
    solved as f64 / tasks.min(ids.len()) as f64
}

/// Run with `cargo test -p kiln --lib sim::tests::print_success_rates --
/// --ignored --nocapture` (optionally `SIM_PROFILES=weak,weak?window=900`
/// and `SIM_ABLATE=1` for one helper at a time) when retuning profiles.
#[test]
#[ignore = "prints a table for tuning the profiles"]
fn print_success_rates() {
    let shop = ShopSuite::new();
    let house = HouseSuite::new();
    let profiles = std::env::var("SIM_PROFILES").unwrap_or("perfect,strong,mid,weak".into());
    for profile in profiles.split(',') {
        for (name, suite) in [("shop", &shop as &dyn Suite), ("house", &house as &dyn Suite)] {
            let bare = success_rate(profile, suite, 300, BARE);
            let stock = success_rate(profile, suite, 300, STOCK);
            println!("{profile:8} {name:6} bare {bare:.2} stock {stock:.2}");
            if std::env::var("SIM_ABLATE").is_ok() {
                let only = [
                    ("pin", Helpers { goal_pin: Some(6), ..BARE }),
                    ("loop", Helpers { loop_guard: true, ..BARE }),
                    ("repair", Helpers { repair: true, ..BARE }),
                    ("trim", Helpers { trim: Some(420), ..BARE }),
                    ("budget", Helpers { budget: true, ..BARE }),
                    ("all-but-trim", Helpers { trim: None, ..STOCK }),
                ];
                for (label, helpers) in only {
                    println!("    only {label:12} {:.2}", success_rate(profile, suite, 300, helpers));
                }
            }
        }
    }
}

fn shop() -> ShopSuite {
    ShopSuite::new()
}

fn house() -> HouseSuite {
    HouseSuite::new()
}

/// The first user message of `task` followed by `calls` and their results.
fn scripted(suite: &dyn Suite, task: &str, calls: &[(&str, serde_json::Value)]) -> (Vec<Message>, Vec<ToolSpec>) {
    let mut env = suite.make().unwrap();
    let start = env.reset(task, 0).unwrap();
    let mut messages = vec![Message::user(start.prompt)];
    for (n, (name, args)) in calls.iter().enumerate() {
        let call = ToolCall { id: format!("c{n}"), name: name.to_string(), arguments: args.to_string() };
        let observation = env.step(&call).unwrap();
        messages.push(Message::assistant("", vec![call]));
        messages.push(Message::tool(format!("c{n}"), observation.content));
    }
    (messages, start.tools)
}

/// Messages that bring the shop oracle to the point of buying `task`.
fn ready_to_buy(task: &str) -> (Vec<Message>, Vec<ToolSpec>) {
    let suite = shop();
    let mut env = suite.env();
    let start = crate::env::Environment::reset(&mut env, task, 0).unwrap();
    let mut messages = vec![Message::user(start.prompt)];
    while let Some(call) = env.oracle_call() {
        if call.name == "buy" {
            break;
        }
        let observation = crate::env::Environment::step(&mut env, &call).unwrap();
        messages.push(Message::assistant("", vec![call.clone()]));
        messages.push(Message::tool(call.id, observation.content));
    }
    (messages, start.tools)
}

fn request(messages: Vec<Message>, tools: Vec<ToolSpec>) -> ModelRequest {
    ModelRequest { system: SYSTEM.to_string(), messages, tools, seed: 3, ..ModelRequest::default() }
}

fn reply(spec: &str, request: &ModelRequest) -> ModelResponse {
    Sim::from_spec(spec).unwrap().respond(request)
}

fn raw(response: &ModelResponse) -> serde_json::Value {
    serde_json::from_str(response.raw.as_deref().unwrap()).unwrap()
}

#[test]
fn strong_solves_at_least_90_percent_of_both_suites() {
    for (name, suite) in [("shop", &shop() as &dyn Suite), ("house", &house() as &dyn Suite)] {
        let rate = success_rate("strong", suite, 50, BARE);
        assert!(rate >= 0.9, "sim:strong solved only {rate:.2} of {name}");
    }
}

#[test]
fn weak_alone_solves_a_minority_and_the_stock_helpers_lift_it() {
    for (name, suite) in [("shop", &shop() as &dyn Suite), ("house", &house() as &dyn Suite)] {
        let bare = success_rate("weak", suite, 50, BARE);
        let helped = success_rate("weak", suite, 50, STOCK);
        assert!((0.1..=0.5).contains(&bare), "sim:weak alone solved {bare:.2} of {name}");
        assert!(helped >= bare + 0.2, "{name}: helpers lifted sim:weak only from {bare:.2} to {helped:.2}");
    }
}

#[test]
fn same_seed_same_transcript_and_other_seeds_differ() {
    let sim = Sim::from_spec("weak").unwrap();
    let mut differs = false;
    for (suite, prefix) in [(&shop() as &dyn Suite, "shop"), (&house() as &dyn Suite, "house")] {
        for index in 0..5 {
            let task = format!("{prefix}/test/{index}");
            for helpers in [BARE, STOCK] {
                let a = run(&sim, suite, &task, 11, helpers);
                let b = run(&sim, suite, &task, 11, helpers);
                assert_eq!(a.transcript, b.transcript, "{task}");
                assert_eq!(a.responses, b.responses, "{task}");
                assert_eq!(a.score, b.score, "{task}");
                differs |= run(&sim, suite, &task, 12, helpers).transcript != a.transcript;
            }
        }
    }
    assert!(differs, "another seed should change some transcript");
}

#[test]
fn the_same_request_gets_the_same_reply() {
    let (messages, tools) = ready_to_buy("shop/train/4");
    let req = request(messages, tools);
    for spec in ["weak", "mid", "strong"] {
        assert_eq!(reply(spec, &req), reply(spec, &req), "{spec}");
    }
}

#[test]
fn calls_written_as_text_end_the_task_unless_repaired() {
    let (messages, tools) = scripted(&shop(), "shop/test/0", &[]);
    let names: Vec<String> = tools.iter().map(|t| t.name.clone()).collect();
    let mut response = reply("perfect?text_call_rate=1", &request(messages, tools));
    assert!(response.calls.is_empty());
    assert!(response.text.contains("search[{\"query\":"), "{}", response.text);
    repair(&mut response, &names);
    assert_eq!(response.calls.len(), 1);
    assert_eq!(response.calls[0].name, "search");
}

#[test]
fn malformed_json_and_invented_names_are_repairable() {
    let (messages, tools) = scripted(&shop(), "shop/test/0", &[]);
    let names: Vec<String> = tools.iter().map(|t| t.name.clone()).collect();
    let req = request(messages, tools);
    let clean = reply("perfect", &req).calls.remove(0);
    let mut broken = reply("perfect?malformed_rate=1&invent_rate=1", &req);
    let call = &broken.calls[0];
    assert!(serde_json::from_str::<serde_json::Value>(&call.arguments).is_err(), "{}", call.arguments);
    assert!(!names.contains(&call.name), "{}", call.name);
    repair(&mut broken, &names);
    // `find` has no nearest name; everything else maps back.
    if broken.calls[0].name != "find" {
        assert!(context::same_call(&broken.calls[0], &clean), "{:?} vs {:?}", broken.calls[0], clean);
    }
    assert_eq!(nearest_name("search_products", &names).as_deref(), Some("search"));
    assert_eq!(nearest_name("buy_now", &names).as_deref(), Some("buy"));
}

#[test]
fn loops_persist_until_advice_or_a_block_breaks_them() {
    let (messages, tools) = scripted(
        &shop(),
        "shop/test/2",
        &[
            ("search", serde_json::json!({ "query": "cotton" })),
            ("next_page", serde_json::json!({})),
            ("next_page", serde_json::json!({})),
        ],
    );
    let stuck = "perfect?loop_persist=1&obey=0&obey_block=0";
    let req = request(messages.clone(), tools.clone());
    assert_eq!(reply(stuck, &req).calls[0].name, "next_page");
    assert_eq!(raw(&reply(stuck, &req))["notes"][0], "loop_repeat");
    assert_ne!(reply("perfect", &req).calls[0].name, "next_page", "without the loop flaw it moves on");

    let mut advised = messages.clone();
    advised
        .push(Message::user("[advice from loop-guard] You repeated next_page[{}] 2 times; try something different."));
    let req = request(advised, tools.clone());
    assert_eq!(reply(stuck, &req).calls[0].name, "next_page", "obey=0 ignores advice");
    assert_ne!(reply("perfect?loop_persist=1&obey=1", &req).calls[0].name, "next_page");

    let mut blocked = messages;
    blocked.last_mut().unwrap().content = "[blocked by loop-guard] You repeated next_page[{}] 3 times.".to_string();
    let req = request(blocked, tools);
    assert_ne!(reply("perfect?loop_persist=1&obey=0&obey_block=1", &req).calls[0].name, "next_page");
}

#[test]
fn early_stops_give_way_to_a_block() {
    let (mut messages, tools) = scripted(
        &house(),
        "house/test/0",
        &[("act", serde_json::json!({ "command": "look" })), ("admissible", serde_json::json!({}))],
    );
    let quitter = "perfect?early_stop_rate=1&obey_block=1";
    let response = reply(quitter, &request(messages.clone(), tools.clone()));
    assert!(response.calls.is_empty(), "{response:?}");
    messages.push(Message::user("[blocked by step-budget] 37 steps left: the task is not finished yet; keep going."));
    assert_eq!(reply(quitter, &request(messages, tools)).calls.len(), 1);
}

#[test]
fn a_dithering_shopper_buys_when_told_steps_are_running_out() {
    let (mut messages, tools) = ready_to_buy("shop/test/7");
    let dither = "perfect?dither_rate=1&obey=1";
    assert_eq!(reply("perfect", &request(messages.clone(), tools.clone())).calls[0].name, "buy");
    assert_ne!(reply(dither, &request(messages.clone(), tools.clone())).calls[0].name, "buy");
    messages.push(Message::user("[advice from step-budget] 3 steps left: finish now."));
    assert_eq!(reply(dither, &request(messages, tools)).calls[0].name, "buy");
}

#[test]
fn without_the_goal_in_view_it_buys_whatever_is_open_and_a_pin_fixes_that() {
    let suite = shop();
    let task = "shop/test/9";
    let (start, _) = scripted(&suite, task, &[]);
    let goal = start[0].content.lines().next().unwrap().trim_start_matches("Goal:").trim().to_string();
    // Open a product of another type than the goal's: wrong for the task.
    let wrong = if goal.contains("coffee") { "tea" } else { "coffee" };
    let (searched, _) = scripted(&suite, task, &[("search", serde_json::json!({ "query": wrong }))]);
    let first_result = searched[2].content.lines().nth(1).unwrap()[1..6].to_string();
    let (mut messages, tools) = scripted(
        &suite,
        task,
        &[("search", serde_json::json!({ "query": wrong })), ("view", serde_json::json!({ "id": first_result }))],
    );
    let narrow = "perfect?window=200";
    let forgetful = reply(narrow, &request(messages.clone(), tools.clone()));
    assert_eq!(raw(&forgetful)["goal_in_view"], false);
    assert_eq!(forgetful.calls[0].name, "buy", "with no goal in view it buys what is open");
    assert_ne!(reply("perfect", &request(messages.clone(), tools.clone())).calls[0].name, "buy");
    messages.push(Message::user(format!("Goal (pinned): {goal}")));
    let pinned = reply(narrow, &request(messages, tools));
    assert_eq!(raw(&pinned)["goal_in_view"], true);
    assert_ne!(pinned.calls[0].name, "buy");
}

#[test]
fn inadmissible_commands_appear_at_the_invalid_rate() {
    let suite = house();
    let count = |spec: &str| {
        let sim = Sim::from_spec(spec).unwrap();
        (0..6)
            .map(|i| run(&sim, &suite, &format!("house/test/{i}"), 0, BARE))
            .flat_map(|o| o.transcript)
            .filter(|m| m.role == crate::chat::Role::Tool && m.content == "Nothing happens.")
            .count()
    };
    assert_eq!(count("perfect"), 0);
    assert!(count("perfect?invalid_rate=0.5") >= 6);
}

#[test]
fn unknown_tool_sets_get_a_final_answer() {
    let tools = vec![ToolSpec::new("calculator", "adds", serde_json::json!({ "type": "object" }))];
    let response = reply("strong", &request(vec![Message::user("Goal: add 2 and 2")], tools));
    assert!(response.calls.is_empty() && response.text.contains("calculator"));
}

#[test]
fn the_model_trait_answers_like_respond_and_reports_usage() {
    let sim = Sim::from_spec("sim:mid?window=5000").unwrap();
    assert_eq!(sim.describe(), "sim:mid?window=5000");
    assert_eq!(sim.knobs().window, 5000);
    let (messages, tools) = ready_to_buy("shop/train/2");
    let small = request(messages[..1].to_vec(), tools.clone());
    let big = request(messages, tools);
    let mut future = sim.complete(&big);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let std::task::Poll::Ready(Ok(answer)) = future.as_mut().poll(&mut cx) else { panic!("sim must answer at once") };
    assert_eq!(answer, sim.respond(&big));
    assert!(answer.usage.input_tokens > sim.respond(&small).usage.input_tokens);
    assert!(answer.usage.output_tokens > 0);
    let error = Sim::from_spec("weak?patience=3").unwrap_err().to_string();
    assert!(error.contains("unknown sim knob `patience`"), "{error}");
}

/// history-compactor's digest, natively (the format in its crate docs):
/// messages `1..cut` become one user message with one line per call.
fn compact_with_digest(messages: &[Message], cut: usize) -> Vec<Message> {
    let flat = |text: &str| {
        let joined = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ");
        if joined.chars().count() <= 160 {
            return joined;
        }
        let mut cut: String = joined.chars().take(159).collect();
        cut.truncate(cut.trim_end().len());
        cut + "…"
    };
    let mut lines = Vec::new();
    for message in &messages[1..cut] {
        for call in &message.calls {
            let result = messages[1..cut].iter().find(|m| m.call_id.as_deref() == Some(call.id.as_str()));
            lines.push(format!("- {} {} -> {}", call.name, flat(&call.arguments), flat(&result.unwrap().content)));
        }
    }
    let header = format!("[compacted {} earlier messages; earlier actions and what they showed:]", cut - 1);
    let mut compacted = vec![messages[0].clone(), Message::user(format!("{header}\n{}", lines.join("\n")))];
    compacted.extend_from_slice(&messages[cut..]);
    compacted
}

#[test]
fn a_digest_keeps_what_a_bare_marker_forgets() {
    let suite = house();
    let sim = Sim::from_spec("perfect").unwrap();
    let (mut same, mut compared, mut marker_differs) = (0, 0, 0);
    for index in 0..12 {
        let task = format!("house/test/{index}");
        let transcript = run(&sim, &suite, &task, 0, BARE).transcript;
        let tools = suite.make().unwrap().reset(&task, 0).unwrap().tools;
        // Every prefix that ends after a tool result, with all but the last
        // two steps compacted.
        for end in (7..transcript.len()).step_by(2) {
            let prefix = &transcript[..end];
            if prefix.last().unwrap().role != crate::chat::Role::Tool {
                continue;
            }
            let cut = end - 4;
            let full = reply("perfect", &request(prefix.to_vec(), tools.clone()));
            let condensed = compact_with_digest(prefix, cut);
            let digested = reply("perfect", &request(condensed.clone(), tools.clone()));
            assert!(raw(&digested)["recalled_steps"].as_u64().unwrap() > 0);
            let mut forgotten =
                vec![prefix[0].clone(), Message::user(format!("[compacted {} earlier messages]", cut - 1))];
            forgotten.extend_from_slice(&prefix[cut..]);
            let marked = reply("perfect", &request(forgotten, tools.clone()));
            compared += 1;
            same += usize::from(same_calls(&digested, &full));
            marker_differs += usize::from(!same_calls(&marked, &full));
        }
    }
    assert!(compared >= 40, "only {compared} prefixes compared");
    assert!(same * 100 >= compared * 95, "the digest changed {} of {compared} decisions", compared - same);
    assert!(marker_differs * 3 >= compared, "a bare marker changed only {marker_differs} of {compared} decisions");
}

fn same_calls(a: &ModelResponse, b: &ModelResponse) -> bool {
    a.calls.len() == b.calls.len() && a.calls.iter().zip(&b.calls).all(|(x, y)| context::same_call(x, y))
}
