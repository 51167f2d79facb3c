//! `house`: text households after ALFWorld (Shridhar et al., 2021).
//!
//! Each task is a room with numbered receptacles (cabinets and drawers start
//! closed), objects, and appliances, and a goal of one of ALFWorld's six types
//! in equal shares: pick and place, pick two, clean, heat, cool, and examine
//! under the desklamp. The agent acts through `act {command}` with ALFWorld's
//! commands (`go to countertop 1`, `open fridge 1`, `take apple 1 from
//! countertop 1`, `put apple 1 in/on shelf 2`, `clean apple 1 with sinkbasin
//! 1`, `heat ...`, `cool ...`, `use desklamp 1`, `look`, `inventory`,
//! `examine ...`) and can list what is possible now with `admissible {}`.
//!
//! Design choices:
//! - ALFWorld's game files cannot be fetched offline, so rooms are generated
//!   (`world.rs`) from the task id alone; the task is the same for every seed.
//! - The seed changes only the order in which receptacles are listed, the
//!   order an agent tends to explore in: different seeds give different
//!   trajectories over the same problem, which is what pass@k needs.
//! - An inadmissible command is the observation `Nothing happens.` (with
//!   `is_error` set, as the environment contract asks), never an `Err`.
//! - Success is binary and ends the task; so does the step limit
//!   ([`MAX_STEPS`]).
//! - [`HouseEnv::oracle_call`] plays from the hidden state and solves every
//!   task; tests use it to prove every task solvable.

mod episode;
mod world;

use std::sync::Arc;

use serde_json::{json, Value};

use self::episode::Episode;
use self::world::{HouseTask, TaskKind};
use super::rng::SplitMix64;
use crate::chat::{ToolCall, ToolSpec};
use crate::env::{EnvError, Environment, Observation, Score, Split, Start, Suite};

/// The suite's name, also the first part of its task ids.
pub const NAME: &str = "house";
/// Tool calls allowed per task.
pub const MAX_STEPS: u32 = 40;
/// 30 tasks of each of the six types.
const TRAIN_TASKS: usize = 180;
/// 20 tasks of each of the six types.
const TEST_TASKS: usize = 120;

struct Tasks {
    train: Vec<HouseTask>,
    test: Vec<HouseTask>,
}

/// The `house` suite: 180 training and 120 test tasks.
#[derive(Clone)]
pub struct HouseSuite {
    tasks: Arc<Tasks>,
}

impl HouseSuite {
    /// Generate every task (a millisecond or so).
    pub fn new() -> HouseSuite {
        let train = (0..TRAIN_TASKS).map(|i| HouseTask::generate(Split::Train, i)).collect();
        let test = (0..TEST_TASKS).map(|i| HouseTask::generate(Split::Test, i)).collect();
        HouseSuite { tasks: Arc::new(Tasks { train, test }) }
    }

    /// A fresh environment of the concrete type (for the oracle).
    pub fn env(&self) -> HouseEnv {
        HouseEnv { tasks: Arc::clone(&self.tasks), episode: None }
    }
}

impl Default for HouseSuite {
    fn default() -> Self {
        HouseSuite::new()
    }
}

impl Suite for HouseSuite {
    fn name(&self) -> &str {
        NAME
    }

    fn tasks(&self, split: Split) -> Vec<String> {
        let count = match split {
            Split::Train => self.tasks.train.len(),
            Split::Test => self.tasks.test.len(),
        };
        super::task_ids(NAME, split, count)
    }

    fn make(&self) -> Result<Box<dyn Environment>, EnvError> {
        Ok(Box::new(self.env()))
    }
}

/// One `house` environment: one task at a time.
pub struct HouseEnv {
    tasks: Arc<Tasks>,
    episode: Option<Episode>,
}

impl HouseEnv {
    /// `(split code, index, task)` for a task id like `house/test/4`.
    fn lookup(&self, id: &str) -> Option<(u64, usize, &HouseTask)> {
        match super::parse_task_id(NAME, id)? {
            (Split::Train, index) => self.tasks.train.get(index).map(|t| (0, index, t)),
            (Split::Test, index) => self.tasks.test.get(index).map(|t| (1, index, t)),
        }
    }

    /// The admissible commands right now (empty before `reset`).
    pub fn admissible_commands(&self) -> Vec<String> {
        self.episode.as_ref().map(Episode::admissible).unwrap_or_default()
    }

    /// The perfect next command for the current task, from the hidden
    /// state, or `None` when the task is over.
    pub fn oracle_call(&self) -> Option<ToolCall> {
        let episode = self.episode.as_ref().filter(|e| !e.done())?;
        let command = oracle_command(episode)?;
        Some(ToolCall {
            id: format!("oracle-{}", episode.steps),
            name: "act".to_string(),
            arguments: json!({ "command": command }).to_string(),
        })
    }
}

/// Go to a receptacle, open it if closed, then do `then`.
fn reach(episode: &Episode, receptacle: usize, then: String) -> String {
    let name = episode.receptacle_name(receptacle);
    if episode.location != Some(receptacle) {
        format!("go to {name}")
    } else if episode.is_closed(receptacle) {
        format!("open {name}")
    } else {
        then
    }
}

fn oracle_command(episode: &Episode) -> Option<String> {
    let task = &episode.task;
    let first_of = |kind: &str| episode.task.receptacles.iter().position(|r| r.kind == kind);
    let target = task.target.and_then(first_of);
    if let Some(held) = episode.holding {
        let object = &episode.objects[held];
        let name = object.name();
        if object.kind != task.object {
            let here = episode.location?;
            return Some(format!("put {name} in/on {}", episode.receptacle_name(here)));
        }
        let prepared = match task.kind {
            TaskKind::Clean => object.clean,
            TaskKind::Heat => object.hot,
            TaskKind::Cool => object.cool,
            _ => true,
        };
        if !prepared {
            let appliance = first_of(task.kind.appliance()?)?;
            let verb = match task.kind {
                TaskKind::Clean => "clean",
                TaskKind::Heat => "heat",
                _ => "cool",
            };
            return Some(if episode.location == Some(appliance) {
                format!("{verb} {name} with {}", episode.receptacle_name(appliance))
            } else {
                format!("go to {}", episode.receptacle_name(appliance))
            });
        }
        if task.kind == TaskKind::Examine {
            let lamp = episode.objects.iter().find(|o| o.kind == "desklamp")?;
            let stand = lamp.receptacle?;
            return Some(reach(episode, stand, format!("use {}", lamp.name())));
        }
        let target = target?;
        return Some(reach(episode, target, format!("put {name} in/on {}", episode.receptacle_name(target))));
    }
    // Take the first instance not already where it belongs.
    let object =
        episode.objects.iter().find(|o| o.kind == task.object && o.receptacle.is_some() && o.receptacle != target)?;
    let home = object.receptacle?;
    Some(reach(episode, home, format!("take {} from {}", object.name(), episode.receptacle_name(home))))
}

impl Environment for HouseEnv {
    fn reset(&mut self, task: &str, seed: u64) -> Result<Start, EnvError> {
        let Some((split_code, index, found)) = self.lookup(task) else {
            return Err(EnvError::UnknownTask { env: NAME.to_string(), task: task.to_string() });
        };
        let found = found.clone();
        let mut listing: Vec<usize> = (0..found.receptacles.len()).collect();
        SplitMix64::from_parts("house/listing", &[split_code, index as u64, seed]).shuffle(&mut listing);
        let goal = found.goal();
        let episode = Episode::new(found, listing, MAX_STEPS);
        let prompt = format!("Goal: {goal}\nYou are in the middle of a room. {}", episode.room_text());
        self.episode = Some(episode);
        Ok(Start { prompt, tools: tool_specs(), max_steps: MAX_STEPS })
    }

    fn step(&mut self, call: &ToolCall) -> Result<Observation, EnvError> {
        let episode = self.episode.as_mut().ok_or_else(|| EnvError::Broken {
            env: NAME.to_string(),
            reason: "step called before reset; call reset with a task id first".to_string(),
        })?;
        let error = |content: String| Ok(Observation { content: format!("Error: {content}"), is_error: true });
        if episode.done() {
            return error("the task is over; no more actions are accepted.".to_string());
        }
        let args = match super::object_arguments(call) {
            Ok(args) => args,
            Err(reason) => {
                episode.steps += 1;
                return error(reason);
            }
        };
        match call.name.as_str() {
            "act" => match args.get("command").and_then(Value::as_str) {
                Some(command) => {
                    let (content, is_error) = episode.act(command);
                    Ok(Observation { content, is_error })
                }
                None => {
                    episode.steps += 1;
                    error("act needs a `command`, e.g. {\"command\": \"go to countertop 1\"}.".to_string())
                }
            },
            "admissible" => Ok(Observation { content: episode.admissible_step(), is_error: false }),
            other => {
                episode.steps += 1;
                error(format!("unknown tool `{other}`. Available tools: act, admissible."))
            }
        }
    }

    fn done(&self) -> bool {
        self.episode.as_ref().is_none_or(Episode::done)
    }

    fn score(&self) -> Score {
        let solved = self.episode.as_ref().is_some_and(|e| e.solved);
        Score { reward: if solved { 1.0 } else { 0.0 }, success: solved }
    }
}

/// The tools of the house: `act` and `admissible`.
pub fn tool_specs() -> Vec<ToolSpec> {
    super::text_world_tools(
        "Do one thing in the room, e.g. `go to countertop 1`, `open fridge 1`, `take apple 1 from countertop 1`, \
         `put apple 1 in/on shelf 2`, `clean apple 1 with sinkbasin 1`, `heat ... with microwave 1`, \
         `cool ... with fridge 1`, `use desklamp 1`, `look`, `inventory`, `examine apple 1`.",
        "List the commands that are possible right now.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act(command: &str) -> ToolCall {
        ToolCall { id: "t".into(), name: "act".into(), arguments: json!({ "command": command }).to_string() }
    }

    #[test]
    fn the_oracle_solves_every_task_of_both_splits() {
        let suite = HouseSuite::new();
        for split in [Split::Train, Split::Test] {
            let tasks = suite.tasks(split);
            assert!(tasks.len() >= 100);
            for task in tasks {
                for seed in [0, 7] {
                    let mut env = suite.env();
                    env.reset(&task, seed).unwrap();
                    let mut log = Vec::new();
                    while let Some(next) = env.oracle_call() {
                        let observation = env.step(&next).unwrap();
                        assert!(
                            !observation.is_error,
                            "{task}: oracle's {} failed: {}",
                            next.arguments, observation.content
                        );
                        log.push(next.arguments);
                    }
                    assert!(env.score().success, "{task} seed {seed}: {log:?}");
                }
            }
        }
    }

    #[test]
    fn the_six_task_types_have_equal_shares() {
        let suite = HouseSuite::new();
        for split in [Split::Train, Split::Test] {
            let tasks = match split {
                Split::Train => &suite.tasks.train,
                Split::Test => &suite.tasks.test,
            };
            for kind in TaskKind::ALL {
                assert_eq!(tasks.iter().filter(|t| t.kind == kind).count() * 6, tasks.len());
            }
        }
    }

    #[test]
    fn a_random_policy_rarely_succeeds() {
        let suite = HouseSuite::new();
        let tasks = suite.tasks(Split::Train);
        let mut successes = 0;
        for (n, task) in tasks.iter().enumerate() {
            let mut rng = SplitMix64::new(n as u64);
            let mut env = suite.env();
            env.reset(task, 0).unwrap();
            while !env.done() {
                let commands = env.admissible_commands();
                let command = rng.pick(&commands).clone();
                env.step(&act(&command)).unwrap();
            }
            successes += usize::from(env.score().success);
        }
        assert!(successes * 10 < tasks.len(), "random policy succeeded {successes} of {} times", tasks.len());
    }

    #[test]
    fn same_task_and_seed_give_identical_observations() {
        let suite = HouseSuite::new();
        let transcript = |seed| {
            let mut env = suite.env();
            let mut out = vec![env.reset("house/train/3", seed).unwrap().prompt];
            for _ in 0..12 {
                let next = env.oracle_call().unwrap_or_else(|| act("look"));
                out.push(env.step(&next).unwrap().content);
            }
            out
        };
        assert_eq!(transcript(5), transcript(5));
        assert_ne!(transcript(5)[0], transcript(6)[0], "the seed should change the listing order");
    }

    #[test]
    fn unknown_tasks_are_refused_by_name() {
        let mut env = HouseSuite::new().env();
        for bad in ["house/train/180", "house/val/1", "shop/train/1", "house/test/x"] {
            assert!(matches!(env.reset(bad, 0), Err(EnvError::UnknownTask { .. })), "{bad}");
        }
    }

    #[test]
    fn inadmissible_commands_are_nothing_happens_observations() {
        let suite = HouseSuite::new();
        let mut env = suite.env();
        let start = env.reset("house/train/0", 0).unwrap();
        assert!(start.prompt.starts_with("Goal: put a "), "{}", start.prompt);
        assert!(start.prompt.contains("\nYou are in the middle of a room. Looking quickly around you, you see a "));
        for bad in ["fly to the moon", "take apple 1 from cabinet 1", "open cabinet 1", "go to cabinet 99"] {
            let observation = env.step(&act(bad)).unwrap();
            assert_eq!((observation.content.as_str(), observation.is_error), ("Nothing happens.", true), "{bad}");
        }
        let arrive = env.step(&act("go to cabinet 1")).unwrap();
        assert_eq!(arrive.content, "You arrive at cabinet 1. The cabinet 1 is closed.");
        let opened = env.step(&act("open cabinet 1")).unwrap();
        assert!(opened.content.starts_with("You open the cabinet 1. The cabinet 1 is open. In it, you see "));
        let listed = env.step(&ToolCall { id: "a".into(), name: "admissible".into(), arguments: "{}".into() }).unwrap();
        assert!(listed.content.starts_with("Admissible commands:\n") && listed.content.contains("\nclose cabinet 1\n"));
        let malformed = env
            .step(&ToolCall { id: "m".into(), name: "act".into(), arguments: "{'command': 'look'}".into() })
            .unwrap();
        assert!(malformed.is_error && malformed.content.starts_with("Error: the arguments of `act`"));
        let unknown = env.step(&ToolCall { id: "u".into(), name: "execute".into(), arguments: "{}".into() }).unwrap();
        assert!(unknown.is_error && unknown.content.contains("unknown tool `execute`"));
    }

    #[test]
    fn the_step_limit_ends_the_task() {
        let suite = HouseSuite::new();
        let mut env = suite.env();
        env.reset("house/test/0", 0).unwrap();
        for _ in 0..MAX_STEPS {
            env.step(&act("look")).unwrap();
        }
        assert!(env.done() && !env.score().success);
    }
}
