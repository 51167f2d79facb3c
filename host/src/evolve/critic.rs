//! The Critic: deterministic checks against reward hacking, overlap and
//! non-local effects, then a ranking.
//!
//! | rule | blocks when |
//! |---|---|
//! | `capability` | the code uses file or network capabilities (no evidence ever needs them: the harness grants none) |
//! | `hard-coding` | the source, config or prompt holds a task id, a goal instruction, or an argument literal with a digit from a solved trace (an answer) |
//! | `scoring` | the text mentions rewards, scores, verifiers or grades |
//! | `no-op` | the candidate harness is the incumbent |
//! | `duplicate` | the same harness was a candidate before (this round or an earlier one) |
//! | `overlap` | the new processor does the job of one already in the harness (goal-reminder / goal-pin, tool-alias / tool-call-repair) |
//! | `non-local` | replayed on the incumbent's solved traces outside its predicted impact, it changes outputs on more than a quarter of them (fewer: a warning that lowers its rank) |
//! | `portfolio` | its lever shipped in 2 of the last 3 rounds with a cumulative hit rate under 0.4 (a strategy concern for the Planner) |
//!
//! Ranking of what is left: most tasks predicted to unlock, then fewest
//! out-of-scope changes, then no build before a build, then proposal order.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::evolver::Candidate;
use super::forge::smoke;
use super::plan::LeverStats;
use super::rollout::{Lab, TaskResult};
use crate::trace::Event;

/// One finding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    pub rule: String,
    pub blocks: bool,
    pub detail: String,
}

/// The Critic's view of one candidate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub flags: Vec<Flag>,
    pub blocked: bool,
    /// Solved tasks outside the predicted impact whose outputs it changes.
    pub out_of_scope_changes: Vec<String>,
    /// Position in the ranking (1 = first), when not blocked.
    pub rank: Option<usize>,
}

/// What the Critic knows besides the candidates.
pub struct Context<'a> {
    pub lab: &'a Lab,
    pub digest: &'a Digest,
    pub results: &'a [TaskResult],
    /// Every task id of the suite (train and held-out).
    pub task_ids: &'a [String],
    /// Harness ids seen as candidates before, with the candidate that had them.
    pub seen: &'a BTreeMap<String, String>,
    pub levers: &'a BTreeMap<String, LeverStats>,
    pub round: u32,
    pub incumbent: &'a str,
    /// Names of processors in the incumbent.
    pub present: Vec<String>,
}

const OVERLAPS: &[(&str, &str, &str)] = &[
    ("goal-reminder", "goal-pin", "keeping the goal in view"),
    ("tool-alias", "tool-call-repair", "mapping invented tool names"),
];

fn answer_literals(events: &[Event], out: &mut BTreeSet<String>) {
    for e in events {
        if let Event::ToolCall { call, .. } = e {
            if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(&call.arguments) {
                for v in m.values() {
                    if let Some(s) = v.as_str() {
                        if s.len() >= 4 && s.chars().any(|c| c.is_ascii_digit()) {
                            out.insert(s.to_string());
                        }
                    }
                }
            }
        }
    }
}

/// Review and rank the candidates (in place of nothing: returns one review each).
pub fn review(cx: &Context<'_>, candidates: &[Candidate]) -> (Vec<Review>, Vec<String>) {
    let solved: Vec<&TaskResult> = cx.results.iter().filter(|r| r.success).collect();
    let solved_events: Vec<(String, Vec<Event>)> =
        solved.iter().filter_map(|r| cx.lab.events(&r.trace).ok().map(|e| (r.task.clone(), e))).collect();
    let mut answers = BTreeSet::new();
    for (_, e) in &solved_events {
        answer_literals(e, &mut answers);
    }
    let goals: Vec<&str> = cx.digest.tasks.iter().filter_map(|t| t.goal.as_deref()).filter(|g| g.len() >= 16).collect();
    let mut concerns = Vec::new();
    for (id, s) in cx.levers {
        let recent = s.ship_rounds.iter().filter(|r| **r + 3 >= cx.round && **r < cx.round).count();
        if recent >= 2 && s.hit_rate().map(|h| h < 0.4).unwrap_or(false) {
            concerns.push(id.clone());
        }
    }
    let mut this_round: BTreeMap<String, String> = BTreeMap::new();
    let mut reviews = Vec::new();
    for c in candidates {
        let mut r = Review::default();
        if c.failed.is_some() {
            reviews.push(r);
            continue;
        }
        let m = &c.manifest;
        let mut flag =
            |rule: &str, blocks: bool, detail: String| r.flags.push(Flag { rule: rule.into(), blocks, detail });
        let text = format!(
            "{}\n{}\n{}",
            c.source_text.clone().unwrap_or_default(),
            c.config_text.clone().unwrap_or_default(),
            m.describe_edit()
        );
        let lower = text.to_ascii_lowercase();
        if ["capabilities::", "read_file", "http_get"].iter().any(|k| text.contains(k)) {
            flag(
                "capability",
                true,
                "uses file or network capabilities, which no evidence needs and the harness does not grant".into(),
            );
        }
        if let Some(id) = cx.task_ids.iter().find(|id| text.contains(id.as_str())) {
            flag("hard-coding", true, format!("embeds the task id `{id}`"));
        } else if let Some(g) = goals.iter().find(|g| text.contains(**g)) {
            flag("hard-coding", true, format!("embeds the goal instruction {g:?}"));
        } else if let Some(a) = answers.iter().find(|a| text.contains(a.as_str())) {
            flag("hard-coding", true, format!("embeds `{a}`, an argument from a solved trace (an answer)"));
        }
        if let Some(k) =
            ["reward", "verifier", "score(", ".score", "success_rate", "grade"].iter().find(|k| lower.contains(**k))
        {
            flag("scoring", true, format!("mentions `{k}`: a harness edit must not touch scoring"));
        }
        if m.harness == cx.incumbent {
            flag("no-op", true, "the candidate harness is the incumbent".into());
        } else if let Some(prev) = cx.seen.get(&m.harness).or_else(|| this_round.get(&m.harness)) {
            flag("duplicate", true, format!("the same harness was candidate {prev}"));
        }
        if let Some(crate::harness::Edit::Insert { name, .. }) = &m.edit {
            for (a, b, job) in OVERLAPS {
                let other = if name == a {
                    b
                } else if name == b {
                    a
                } else {
                    continue;
                };
                if cx.present.iter().any(|p| p == other) {
                    flag("overlap", true, format!("duplicates {other}'s job: {job}"));
                }
            }
        }
        if concerns.contains(&m.lever) {
            flag(
                "portfolio",
                true,
                format!("lever {} shipped in 2 of the last 3 rounds with a hit rate under 0.4", m.lever),
            );
        }
        if let (Some(loaded), Some(cfg)) = (&c.loaded, &c.config_text) {
            let p = &m.predicted_impact;
            let outside: Vec<(String, Vec<Event>)> = solved_events
                .iter()
                .filter(|(t, _)| {
                    !p.tasks_will_unlock.contains(t)
                        && !p.tasks_will_stabilize.contains(t)
                        && !p.tasks_at_risk.contains(t)
                })
                .cloned()
                .collect();
            if !outside.is_empty() {
                let rep = smoke(&cx.lab.rt, loaded, cfg, &c.before, &outside);
                r.out_of_scope_changes = rep.changed.clone();
                let n = rep.changed.len();
                if n > 0 {
                    let share = n as f64 / outside.len() as f64;
                    flag(
                        "non-local",
                        share > 0.25,
                        format!(
                            "changes outputs on {n} of {} solved tasks outside its predicted impact",
                            outside.len()
                        ),
                    );
                }
            }
        }
        r.blocked = r.flags.iter().any(|f| f.blocks);
        this_round.entry(m.harness.clone()).or_insert_with(|| m.candidate_id.clone());
        reviews.push(r);
    }
    let mut order: Vec<usize> =
        (0..candidates.len()).filter(|&i| candidates[i].failed.is_none() && !reviews[i].blocked).collect();
    order.sort_by_key(|&i| {
        let c = &candidates[i];
        (
            std::cmp::Reverse(c.manifest.predicted_impact.tasks_will_unlock.len()),
            reviews[i].out_of_scope_changes.len(),
            c.build.attempts > 0,
            i,
        )
    });
    for (rank, i) in order.into_iter().enumerate() {
        reviews[i].rank = Some(rank + 1);
    }
    (reviews, concerns)
}
