//! The lever catalog and the Planner's adaptation landscape.
//!
//! A *lever* is one kind of edit the Evolver knows how to make: insert a
//! stock processor, instantiate a processor template, tune a stock
//! processor's config, add a prompt line, remove a faulting processor, or
//! (with a `meta` model) have the model write a processor. Each lever has a
//! bucket (prompt, tools, config, processor) and one of the paper's nine
//! dimensions, and names the failure categories it addresses.
//!
//! The landscape lists the round's themes, the tasks that failed in two or
//! more rounds, every lever's record (proposed, shipped, tasks predicted,
//! tasks flipped, hit rate), the buckets and dimensions never tried, and the
//! Critic's strategy concerns. Its output is an ordered list of directions
//! (theme × lever). The order fights under-exploration (paper App. B.1):
//! when some bucket has shipped 3 or more times with a hit rate under 0.5
//! while another bucket was never tried, directions in never-tried buckets
//! go first; otherwise themes go by size and, within a theme, the lever
//! tried least goes first. Levers under a strategy concern are dropped.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::digest::{Category, Digest};
use crate::harness::Harness;

/// The paper's edit buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    Prompt,
    Tools,
    Config,
    Processor,
}

impl Bucket {
    pub const ALL: [Bucket; 4] = [Bucket::Prompt, Bucket::Tools, Bucket::Config, Bucket::Processor];
    pub fn name(self) -> &'static str {
        match self {
            Bucket::Prompt => "prompt",
            Bucket::Tools => "tools",
            Bucket::Config => "config",
            Bucket::Processor => "processor",
        }
    }
}

/// The paper's nine harness dimensions.
pub const DIMENSIONS: [&str; 9] = [
    "D1 model",
    "D2 context",
    "D3 memory",
    "D4 tools",
    "D5 execution",
    "D6 evaluation",
    "D7 control",
    "D8 observability",
    "D9 training",
];

/// How a lever makes its edit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "name")]
pub enum LeverKind {
    /// Instantiate the processor template of this name.
    Template(&'static str),
    /// Insert the stock processor of this name.
    Stock(&'static str),
    /// Tune the config of this stock processor (it must be present).
    Tune(&'static str),
    /// Add a line to the system prompt.
    PromptLine,
    /// Remove the processor that faults most.
    RemoveFaulty,
    /// A `meta` model writes the processor.
    ModelWritten,
}

/// One lever of the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Lever {
    pub id: &'static str,
    pub bucket: Bucket,
    pub dimension: &'static str,
    pub kind: LeverKind,
    pub themes: &'static [Category],
}

use Category as C;

/// The built-in catalog, in the order levers are preferred within a theme.
pub const CATALOG: &[Lever] = &[
    Lever {
        id: "final-answer-guard",
        bucket: Bucket::Processor,
        dimension: "D7 control",
        kind: LeverKind::Template("final-answer-guard"),
        themes: &[C::PrematureStop, C::MalformedCall],
    },
    Lever {
        id: "tool-call-repair",
        bucket: Bucket::Tools,
        dimension: "D4 tools",
        kind: LeverKind::Stock("tool-call-repair"),
        themes: &[C::MalformedCall, C::UnknownTool],
    },
    Lever {
        id: "tool-alias",
        bucket: Bucket::Tools,
        dimension: "D4 tools",
        kind: LeverKind::Template("tool-alias"),
        themes: &[C::UnknownTool],
    },
    Lever {
        id: "loop-guard",
        bucket: Bucket::Processor,
        dimension: "D7 control",
        kind: LeverKind::Stock("loop-guard"),
        themes: &[C::Loop],
    },
    Lever {
        id: "loop-guard-tune",
        bucket: Bucket::Config,
        dimension: "D7 control",
        kind: LeverKind::Tune("loop-guard"),
        themes: &[C::Loop],
    },
    Lever {
        id: "goal-reminder",
        bucket: Bucket::Prompt,
        dimension: "D2 context",
        kind: LeverKind::Template("goal-reminder"),
        themes: &[C::GoalLost, C::WrongAnswer],
    },
    Lever {
        id: "goal-pin",
        bucket: Bucket::Processor,
        dimension: "D2 context",
        kind: LeverKind::Stock("goal-pin"),
        themes: &[C::GoalLost],
    },
    Lever {
        id: "observation-trim",
        bucket: Bucket::Processor,
        dimension: "D2 context",
        kind: LeverKind::Stock("observation-trim"),
        themes: &[C::GoalLost],
    },
    Lever {
        id: "step-budget",
        bucket: Bucket::Processor,
        dimension: "D7 control",
        kind: LeverKind::Stock("step-budget"),
        themes: &[C::BudgetExhausted],
    },
    Lever {
        id: "step-budget-tune",
        bucket: Bucket::Config,
        dimension: "D7 control",
        kind: LeverKind::Tune("step-budget"),
        themes: &[C::BudgetExhausted],
    },
    Lever {
        id: "prompt-line",
        bucket: Bucket::Prompt,
        dimension: "D2 context",
        kind: LeverKind::PromptLine,
        themes: &[C::WrongAnswer, C::PrematureStop, C::InvalidAction, C::ToolError],
    },
    Lever {
        id: "remove-faulty",
        bucket: Bucket::Processor,
        dimension: "D7 control",
        kind: LeverKind::RemoveFaulty,
        themes: &[C::ProcessorFault],
    },
];

/// The lever a model-written candidate uses.
pub const MODEL_WRITTEN: Lever = Lever {
    id: "model-written",
    bucket: Bucket::Processor,
    dimension: "D7 control",
    kind: LeverKind::ModelWritten,
    themes: &[
        C::PrematureStop,
        C::MalformedCall,
        C::Loop,
        C::UnknownTool,
        C::GoalLost,
        C::BudgetExhausted,
        C::InvalidAction,
        C::ToolError,
        C::WrongAnswer,
    ],
};

/// The catalog lever called `id` (or the model-written one).
pub fn lever(id: &str) -> Option<Lever> {
    CATALOG.iter().copied().chain([MODEL_WRITTEN]).find(|l| l.id == id)
}

/// One lever's record so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LeverStats {
    pub bucket: Option<Bucket>,
    pub dimension: String,
    pub proposed: u32,
    pub shipped: u32,
    pub rejected: u32,
    /// Tasks predicted to unlock, summed over ships.
    pub predicted: u32,
    /// Of those, tasks that flipped.
    pub flipped: u32,
    /// Rounds it shipped in.
    pub ship_rounds: Vec<u32>,
}

impl LeverStats {
    /// Flipped over predicted, over ships (paper App. D); `None` before a ship.
    pub fn hit_rate(&self) -> Option<f64> {
        (self.predicted > 0).then(|| self.flipped as f64 / self.predicted as f64)
    }
}

/// One thing worth trying this round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Direction {
    pub theme: Category,
    pub lever: String,
    pub bucket: Bucket,
    pub dimension: String,
    /// Tasks whose primary failure is the theme.
    pub tasks: Vec<String>,
    /// Why this direction is where it is in the order.
    pub why: String,
}

/// The Planner's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Landscape {
    /// Regressions seen so far (the paper puts them first).
    pub regressions: Vec<String>,
    pub top_themes: Vec<(String, usize)>,
    /// Tasks that failed in 2 or more rounds.
    pub persistent_failures: Vec<String>,
    pub tried: BTreeMap<String, LeverStats>,
    pub buckets_tried: BTreeMap<String, (u32, u32)>,
    pub untried_buckets: Vec<String>,
    pub untried_dimensions: Vec<String>,
    pub strategy_concerns: Vec<String>,
    pub directions: Vec<Direction>,
}

/// What the Planner reads besides the digest.
pub struct History<'a> {
    pub levers: &'a BTreeMap<String, LeverStats>,
    /// Rounds each task failed in.
    pub failures: &'a BTreeMap<String, BTreeSet<u32>>,
    pub regressions: &'a [String],
    /// Levers the Critic's portfolio audit flagged.
    pub concerns: &'a [String],
}

/// Whether a lever can act on `harness` at all: a processor it would add
/// is not there yet (by name or singleton group), one it would tune is.
pub fn applicable(lever: &Lever, harness: &Harness) -> bool {
    match lever.kind {
        LeverKind::Template(name) | LeverKind::Stock(name) => harness.processor(name).is_none(),
        LeverKind::Tune(name) => harness.processor(name).is_some(),
        LeverKind::PromptLine | LeverKind::ModelWritten | LeverKind::RemoveFaulty => true,
    }
}

/// Build the landscape. With `model_writes`, code levers (templates) are
/// replaced by the model-written lever for their themes.
pub fn plan(digest: &Digest, incumbent: &Harness, history: &History<'_>, model_writes: bool) -> Landscape {
    let mut buckets: BTreeMap<Bucket, (u32, u32, u32, u32)> = BTreeMap::new(); // proposed, shipped, predicted, flipped
    let mut dims: BTreeSet<String> = BTreeSet::new();
    for s in history.levers.values() {
        if let Some(b) = s.bucket {
            let e = buckets.entry(b).or_default();
            e.0 += s.proposed;
            e.1 += s.shipped;
            e.2 += s.predicted;
            e.3 += s.flipped;
        }
        if s.proposed > 0 {
            dims.insert(s.dimension.clone());
        }
    }
    let untried: Vec<Bucket> =
        Bucket::ALL.into_iter().filter(|b| buckets.get(b).map(|e| e.0).unwrap_or(0) == 0).collect();
    let flat_shipper =
        buckets.iter().find(|(_, e)| e.1 >= 3 && (e.2 == 0 || (e.3 as f64) / (e.2 as f64) < 0.5)).map(|(b, _)| *b);
    let push_untried = flat_shipper.is_some() && !untried.is_empty();

    let mut directions = Vec::new();
    for (rank, theme) in digest.themes.iter().enumerate() {
        let mut levers: Vec<Lever> = CATALOG.iter().copied().filter(|l| l.themes.contains(&theme.category)).collect();
        if model_writes {
            levers.retain(|l| !matches!(l.kind, LeverKind::Template(_)));
            if MODEL_WRITTEN.themes.contains(&theme.category) {
                levers.insert(0, MODEL_WRITTEN);
            }
        }
        levers.retain(|l| applicable(l, incumbent) && !history.concerns.iter().any(|c| c == l.id));
        for (order, l) in levers.iter().enumerate() {
            let stats = history.levers.get(l.id).cloned().unwrap_or_default();
            let neglected = push_untried && untried.contains(&l.bucket);
            let why = if neglected {
                format!(
                    "bucket `{}` was never tried while `{}` keeps shipping with a flat hit rate",
                    l.bucket.name(),
                    flat_shipper.map(|b| b.name()).unwrap_or("")
                )
            } else {
                format!(
                    "theme #{} {} ({} tasks); lever tried {} times, rejected {}",
                    rank + 1,
                    theme.category.name(),
                    theme.count,
                    stats.proposed,
                    stats.rejected
                )
            };
            directions.push((
                (!neglected, rank, stats.rejected, stats.proposed, order),
                Direction {
                    theme: theme.category,
                    lever: l.id.to_string(),
                    bucket: l.bucket,
                    dimension: l.dimension.to_string(),
                    tasks: theme.tasks.clone(),
                    why,
                },
            ));
        }
    }
    directions.sort_by_key(|(key, _)| *key);
    let persistent: Vec<String> =
        history.failures.iter().filter(|(_, r)| r.len() >= 2).map(|(t, _)| t.clone()).collect();
    Landscape {
        regressions: history.regressions.to_vec(),
        top_themes: digest.themes.iter().map(|t| (t.category.name().to_string(), t.count)).collect(),
        persistent_failures: persistent,
        tried: history.levers.clone(),
        buckets_tried: buckets.iter().map(|(b, e)| (b.name().to_string(), (e.0, e.1))).collect(),
        untried_buckets: untried.iter().map(|b| b.name().to_string()).collect(),
        untried_dimensions: DIMENSIONS.iter().filter(|d| !dims.contains(**d)).map(|d| d.to_string()).collect(),
        strategy_concerns: history.concerns.to_vec(),
        directions: directions.into_iter().map(|(_, d)| d).collect(),
    }
}

impl Landscape {
    /// `landscape.md`: the regressions first, then the YAML-ish fields of the paper.
    pub fn markdown(&self, round: u32) -> String {
        let mut s = format!("# Landscape, round {round}\n\n## Regressions\n");
        if self.regressions.is_empty() {
            s.push_str("none\n");
        }
        for r in &self.regressions {
            s.push_str(&format!("- {r}\n"));
        }
        s.push_str("\n```yaml\ntop_themes:\n");
        for (t, n) in &self.top_themes {
            s.push_str(&format!("  - {t}: {n}\n"));
        }
        s.push_str(&format!("persistent_failures: [{}]\n", self.persistent_failures.join(", ")));
        s.push_str(&format!(
            "unattempted_directions:\n  buckets: [{}]\n  dimensions: [{}]\n",
            self.untried_buckets.join(", "),
            self.untried_dimensions.join(", ")
        ));
        s.push_str(&format!("strategy_concerns: [{}]\n```\n\n## Levers tried\n\n| lever | bucket | dimension | proposed | shipped | rejected | hit rate |\n|---|---|---|---|---|---|---|\n", self.strategy_concerns.join(", ")));
        for (id, l) in &self.tried {
            let hr = l.hit_rate().map(|h| format!("{h:.2}")).unwrap_or_else(|| "-".into());
            s.push_str(&format!(
                "| {id} | {} | {} | {} | {} | {} | {hr} |\n",
                l.bucket.map(|b| b.name()).unwrap_or("-"),
                l.dimension,
                l.proposed,
                l.shipped,
                l.rejected
            ));
        }
        s.push_str("\n## Directions, in order\n");
        for (i, d) in self.directions.iter().enumerate() {
            s.push_str(&format!(
                "{}. {} via `{}` ({}, {}): {}\n",
                i + 1,
                d.theme.name(),
                d.lever,
                d.bucket.name(),
                d.dimension,
                d.why
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evolve::digest::Theme;
    use crate::harness::{Facts, Probe, ProbeError, ProcessorEntry};
    use std::sync::Arc;

    /// The harnesses here have no processors, so nothing is ever probed.
    struct NoProcessors;
    impl Probe for NoProcessors {
        fn probe(&self, entry: &ProcessorEntry) -> Result<Facts, ProbeError> {
            Err(ProbeError::Missing { component: entry.component })
        }
    }

    fn digest(themes: &[(Category, usize)]) -> Digest {
        Digest {
            tasks: vec![],
            themes: themes
                .iter()
                .map(|(c, n)| Theme {
                    category: *c,
                    count: *n,
                    symptomatic: *n,
                    tasks: vec!["t".into()],
                    examples: vec![],
                })
                .collect(),
            solved: 0,
            actionability: 1.0,
        }
    }

    #[test]
    fn never_tried_buckets_are_pushed_when_one_ships_flat() {
        let g = Harness::empty(Arc::new(NoProcessors));
        let d = digest(&[(Category::PrematureStop, 5), (Category::WrongAnswer, 2)]);
        let empty = BTreeMap::new();
        let failures = BTreeMap::new();
        let h = History { levers: &empty, failures: &failures, regressions: &[], concerns: &[] };
        let l = plan(&d, &g, &h, false);
        assert_eq!(l.directions[0].lever, "final-answer-guard");
        // The processor bucket has shipped 3 times, flipping little; prompt was never tried.
        let mut levers = BTreeMap::new();
        levers.insert(
            "final-answer-guard".to_string(),
            LeverStats {
                bucket: Some(Bucket::Processor),
                dimension: "D7 control".into(),
                proposed: 3,
                shipped: 3,
                predicted: 10,
                flipped: 1,
                ..Default::default()
            },
        );
        let h = History { levers: &levers, failures: &failures, regressions: &[], concerns: &[] };
        let l = plan(&d, &g, &h, false);
        assert_eq!(l.directions[0].bucket, Bucket::Prompt, "{:#?}", l.directions);
        assert!(l.directions[0].why.contains("never tried"));
        assert!(l.untried_buckets.contains(&"prompt".to_string()));
        // A strategy concern drops the lever.
        let concerns = vec!["final-answer-guard".to_string()];
        let h = History { levers: &levers, failures: &failures, regressions: &[], concerns: &concerns };
        assert!(plan(&d, &g, &h, false).directions.iter().all(|d| d.lever != "final-answer-guard"));
    }
}
