//! `shop`: a generated web shop after WebShop (Yao et al., 2022).
//!
//! The agent gets an instruction such as `i need a slim fit cotton t-shirt,
//! color: navy, price lower than 30.00 dollars` and must find and buy a
//! matching product with the options chosen, within [`MAX_STEPS`] tool calls.
//!
//! Design choices:
//! - **A generated catalog** (`catalog.rs`): 1,260 products in 21 types and 5
//!   categories, built from a fixed seed. Products come in families of near
//!   misses that often share a title, so only the product page tells them
//!   apart. WebShop's real data cannot be fetched offline, and a generated
//!   catalog lets every task be checked solvable.
//! - **BM25 search** (`search.rs`) over titles, types and attributes, 10 results
//!   a page, each shown as `[id] title $price`.
//! - **WebShop's reward** (`task.rs`): type match × the share of requested
//!   attributes, options and price cap satisfied; success iff the reward is 1.
//! - **Tools**: `search {query}`, `next_page {}`, `prev_page {}`, `view {id}`,
//!   `select {option, value}`, `back {}` and `buy {}` (which ends the task).
//!   A bad call is an observation starting `Error:` with `is_error` set.
//! - **Seeds**: WebShop's tasks are fixed instructions, and so are these: the
//!   seed passed to `reset` changes nothing, which trivially keeps "same task
//!   and seed, same observations".
//! - [`ShopEnv::oracle_call`] plays a task perfectly from the hidden target,
//!   through search and paging like an agent would; tests use it to prove
//!   every task solvable.

mod catalog;
mod episode;
mod search;
mod task;

use std::sync::Arc;

use serde_json::json;

use self::catalog::Catalog;
use self::episode::{Episode, Page};
use self::search::SearchIndex;
use self::task::ShopTask;
use crate::chat::{ToolCall, ToolSpec};
use crate::env::{EnvError, Environment, Observation, Score, Split, Start, Suite};

/// The suite's name, also the first part of its task ids.
pub const NAME: &str = "shop";
/// Tool calls allowed per task (WebShop runs in the HarnessX paper use 20).
pub const MAX_STEPS: u32 = 20;
const TRAIN_TASKS: usize = 200;
const TEST_TASKS: usize = 100;

/// Everything the environments of the suite share: built once, read only.
struct World {
    catalog: Catalog,
    index: SearchIndex,
    train: Vec<ShopTask>,
    test: Vec<ShopTask>,
}

/// The `shop` suite: 200 training and 100 test tasks over one catalog.
#[derive(Clone)]
pub struct ShopSuite {
    world: Arc<World>,
}

impl ShopSuite {
    /// Build the catalog, its index and every task (a few milliseconds).
    pub fn new() -> ShopSuite {
        let catalog = Catalog::generate();
        let index = SearchIndex::build(&catalog);
        let train = (0..TRAIN_TASKS).map(|i| ShopTask::generate(&catalog, Split::Train, i)).collect();
        let test = (0..TEST_TASKS).map(|i| ShopTask::generate(&catalog, Split::Test, i)).collect();
        ShopSuite { world: Arc::new(World { catalog, index, train, test }) }
    }

    /// A fresh environment of the concrete type (for the oracle).
    pub fn env(&self) -> ShopEnv {
        ShopEnv { world: Arc::clone(&self.world), episode: None }
    }
}

impl Default for ShopSuite {
    fn default() -> Self {
        ShopSuite::new()
    }
}

impl Suite for ShopSuite {
    fn name(&self) -> &str {
        NAME
    }

    fn tasks(&self, split: Split) -> Vec<String> {
        let count = match split {
            Split::Train => self.world.train.len(),
            Split::Test => self.world.test.len(),
        };
        super::task_ids(NAME, split, count)
    }

    fn make(&self) -> Result<Box<dyn Environment>, EnvError> {
        Ok(Box::new(self.env()))
    }
}

/// One `shop` environment: one task at a time.
pub struct ShopEnv {
    world: Arc<World>,
    episode: Option<Episode>,
}

impl ShopEnv {
    fn task(&self, id: &str) -> Option<&ShopTask> {
        match super::parse_task_id(NAME, id)? {
            (Split::Train, index) => self.world.train.get(index),
            (Split::Test, index) => self.world.test.get(index),
        }
    }

    /// The perfect next call for the current task, or `None` when the task
    /// is over. It searches with the goal's words, pages until the target
    /// shows up, views it, selects the requested options and buys.
    pub fn oracle_call(&self) -> Option<ToolCall> {
        let episode = self.episode.as_ref().filter(|e| !e.done())?;
        let world = &self.world;
        let task = &episode.task;
        let target = task.target;
        let call = |name: &str, args: serde_json::Value| ToolCall {
            id: format!("oracle-{}", episode.steps),
            name: name.to_string(),
            arguments: args.to_string(),
        };
        match episode.page {
            Page::Home => {
                let query = format!("{} {}", task.attributes.join(" "), catalog::TYPES[task.type_index].name);
                Some(call("search", json!({ "query": query })))
            }
            Page::Results(page) => {
                let search = episode.search.as_ref()?;
                if search.page_hits(page).contains(&target) {
                    Some(call("view", json!({ "id": world.catalog.products[target].id })))
                } else if page + 1 < search.pages() {
                    Some(call("next_page", json!({})))
                } else {
                    None
                }
            }
            Page::Product(position) if position != target => Some(call("back", json!({}))),
            Page::Product(_) => match task.options.iter().find(|o| !episode.selected.contains(o)) {
                Some((kind, value)) => Some(call("select", json!({ "option": kind, "value": value }))),
                None => Some(call("buy", json!({}))),
            },
        }
    }
}

impl Environment for ShopEnv {
    fn reset(&mut self, task: &str, _seed: u64) -> Result<Start, EnvError> {
        let Some(found) = self.task(task).cloned() else {
            return Err(EnvError::UnknownTask { env: NAME.to_string(), task: task.to_string() });
        };
        let prompt = format!("Goal: {}\n{}", found.goal(), episode::home_text(&self.world.catalog));
        self.episode = Some(Episode::new(found, MAX_STEPS));
        Ok(Start { prompt, tools: tool_specs(), max_steps: MAX_STEPS })
    }

    fn step(&mut self, call: &ToolCall) -> Result<Observation, EnvError> {
        let world = Arc::clone(&self.world);
        let episode = self.episode.as_mut().ok_or_else(|| EnvError::Broken {
            env: NAME.to_string(),
            reason: "step called before reset; call reset with a task id first".to_string(),
        })?;
        Ok(episode.step(&world.catalog, &world.index, call))
    }

    fn done(&self) -> bool {
        self.episode.as_ref().is_none_or(Episode::done)
    }

    fn score(&self) -> Score {
        self.episode.as_ref().and_then(|e| e.purchase).unwrap_or_default()
    }
}

/// The tools of the shop, as JSON Schemas.
pub fn tool_specs() -> Vec<ToolSpec> {
    let empty = json!({ "type": "object", "properties": {}, "additionalProperties": false });
    vec![
        ToolSpec::new(
            "search",
            "Search the shop. Returns 10 results per page as `[id] title $price` lines.",
            json!({
                "type": "object",
                "properties": { "query": { "type": "string", "description": "words to search for" } },
                "required": ["query"],
                "additionalProperties": false
            }),
        ),
        ToolSpec::new("next_page", "Show the next page of the current search results.", empty.clone()),
        ToolSpec::new("prev_page", "Show the previous page of the current search results.", empty.clone()),
        ToolSpec::new(
            "view",
            "Open a product page by id (e.g. P0123): price, attributes and purchase options.",
            json!({
                "type": "object",
                "properties": { "id": { "type": "string", "description": "a product id from the results" } },
                "required": ["id"],
                "additionalProperties": false
            }),
        ),
        ToolSpec::new(
            "select",
            "Choose a purchase option on the current product page, e.g. option `size`, value `large`.",
            json!({
                "type": "object",
                "properties": {
                    "option": { "type": "string" },
                    "value": { "type": "string" }
                },
                "required": ["option", "value"],
                "additionalProperties": false
            }),
        ),
        ToolSpec::new(
            "back",
            "Go back: from a product page to the results, from the results to the search page.",
            empty.clone(),
        ),
        ToolSpec::new("buy", "Buy the product on the current page with the selected options. Ends the task.", empty),
    ]
}

#[cfg(test)]
mod tests {
    use crate::env::rng::SplitMix64;
    use super::*;

    fn call(name: &str, args: serde_json::Value) -> ToolCall {
        ToolCall { id: "t".into(), name: name.into(), arguments: args.to_string() }
    }

    fn run_oracle(suite: &ShopSuite, task: &str) -> (Score, u32) {
        let mut env = suite.env();
        env.reset(task, 0).unwrap();
        let mut steps = 0;
        while let Some(next) = env.oracle_call() {
            env.step(&next).unwrap();
            steps += 1;
        }
        (env.score(), steps)
    }

    #[test]
    fn the_oracle_solves_every_task_of_both_splits() {
        let suite = ShopSuite::new();
        for split in [Split::Train, Split::Test] {
            let tasks = suite.tasks(split);
            assert!(tasks.len() >= 100);
            for task in tasks {
                let (score, steps) = run_oracle(&suite, &task);
                assert!(score.success && score.reward == 1.0, "{task}: {score:?} after {steps} steps");
            }
        }
    }

    #[test]
    fn a_random_policy_rarely_succeeds() {
        let suite = ShopSuite::new();
        let mut successes = 0;
        let tasks = suite.tasks(Split::Train);
        for (n, task) in tasks.iter().enumerate() {
            let mut rng = SplitMix64::new(n as u64);
            let mut env = suite.env();
            let start = env.reset(task, 0).unwrap();
            let goal_words: Vec<String> = search::tokenize(start.prompt.lines().next().unwrap());
            let mut last = String::new();
            while !env.done() {
                let ids: Vec<String> = last
                    .lines()
                    .filter_map(|l| l.strip_prefix('[').and_then(|l| l.split_once(']')).map(|(id, _)| id.to_string()))
                    .collect();
                let next = match rng.below(6) {
                    0 => call("search", json!({ "query": rng.pick(&goal_words) })),
                    1 => call("next_page", json!({})),
                    2 if !ids.is_empty() => call("view", json!({ "id": rng.pick(&ids) })),
                    3 => call("select", json!({ "option": "color", "value": "black" })),
                    4 => call("back", json!({})),
                    _ => call("buy", json!({})),
                };
                last = env.step(&next).unwrap().content;
            }
            successes += usize::from(env.score().success);
        }
        assert!(successes * 20 < tasks.len(), "random policy succeeded {successes} times");
    }

    #[test]
    fn same_task_and_seed_give_identical_observations() {
        let suite = ShopSuite::new();
        let script = [
            call("search", json!({ "query": "organic coffee" })),
            call("next_page", json!({})),
            call("view", json!({ "id": "P0007" })),
            call("select", json!({ "option": "size", "value": "bogus" })),
            call("back", json!({})),
            call("buy", json!({})),
        ];
        let transcript = |suite: &ShopSuite, seed| {
            let mut env = suite.env();
            let mut out = vec![env.reset("shop/test/5", seed).unwrap().prompt];
            out.extend(script.iter().map(|c| env.step(c).unwrap().content));
            out
        };
        assert_eq!(transcript(&suite, 1), transcript(&suite, 1));
        // A freshly generated catalog is the same catalog.
        assert_eq!(transcript(&suite, 1), transcript(&ShopSuite::new(), 1));
    }

    #[test]
    fn unknown_tasks_are_refused_by_name() {
        let suite = ShopSuite::new();
        let mut env = suite.env();
        for bad in ["shop/train/200", "shop/dev/1", "house/train/1", "shop/train/", "shop/train/01", "shop"] {
            match env.reset(bad, 0) {
                Err(EnvError::UnknownTask { env, task }) => assert_eq!((env.as_str(), task.as_str()), ("shop", bad)),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn pages_and_errors_read_as_documented() {
        let suite = ShopSuite::new();
        let mut env = suite.env();
        let start = env.reset("shop/train/0", 0).unwrap();
        assert!(start.prompt.starts_with("Goal: i need a "));
        assert_eq!(start.tools.len(), 7);
        let results = env.step(&call("search", json!({ "query": "coffee" }))).unwrap();
        assert!(results.content.starts_with("Search results for \"coffee\" (page 1 of "), "{}", results.content);
        let first = results.content.lines().nth(1).unwrap();
        assert!(first.starts_with("[P") && first.contains(" $"), "{first}");
        let bad =
            env.step(&ToolCall { id: "x".into(), name: "search".into(), arguments: "{'query': 'x'}".into() }).unwrap();
        assert!(bad.is_error && bad.content.starts_with("Error: the arguments of `search` are not a valid JSON"));
        let unknown = env.step(&call("buy_now", json!({}))).unwrap();
        assert!(unknown.is_error && unknown.content.contains("unknown tool `buy_now`"));
        let buy = env.step(&call("buy", json!({}))).unwrap();
        assert!(buy.is_error, "buy from a results page must fail");
        let id = &first[1..6];
        let page = env.step(&call("view", json!({ "id": id }))).unwrap();
        assert!(page.content.starts_with(&format!("Product {id}: ")) && page.content.contains("\nAttributes: "));
        assert!(page.content.ends_with("Selected: none"));
        let bought = env.step(&call("buy", json!({}))).unwrap();
        assert!(!bought.is_error && env.done());
        assert!(env.score().reward > 0.0);
        assert!(env.step(&call("back", json!({}))).unwrap().is_error);
    }

    #[test]
    fn running_out_of_steps_ends_the_task_with_no_reward() {
        let suite = ShopSuite::new();
        let mut env = suite.env();
        env.reset("shop/train/1", 0).unwrap();
        for _ in 0..MAX_STEPS {
            assert!(!env.done());
            env.step(&call("back", json!({}))).unwrap();
        }
        assert!(env.done());
        assert_eq!(env.score(), Score::default());
    }
}
