//! The process bridge (`kiln::env::bridge`) end to end: real TextWorldExpress
//! and BabyAI episodes through the reference bridges, and fake bridges
//! (small Python scripts written here) that crash, hang, print garbage, or
//! speak another protocol version.
//!
//! Needs the bridges' Python venv: `make bridges` (which `make test` runs).

use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln::chat::ToolCall;
use kiln::env::bridge::{self, BridgeEnv, BridgeSuite, Launch, Timeouts};
use kiln::env::{EnvError, Environment, Score, Split, Suite};

const TWX_GAMES: [&str; 8] =
    ["cookingworld", "coin", "twc", "mapreader", "arithmetic", "sorting", "simonsays", "peckingorder"];

/// The venv's Python, or a failure that says how to get it.
fn python() -> PathBuf {
    let python = bridge::python();
    assert!(
        python.exists(),
        "the bridge tests need the bridges' Python venv, and {} does not exist: run `make bridges` first",
        python.display()
    );
    python
}

fn act(command: &str) -> ToolCall {
    ToolCall { id: "t".into(), name: "act".into(), arguments: serde_json::json!({ "command": command }).to_string() }
}

fn call(name: &str, arguments: &str) -> ToolCall {
    ToolCall { id: "t".into(), name: name.into(), arguments: arguments.into() }
}

fn broken(result: Result<impl std::fmt::Debug, EnvError>) -> (String, String) {
    match result {
        Err(EnvError::Broken { env, reason }) => (env, reason),
        other => panic!("expected EnvError::Broken, got {other:?}"),
    }
}

/// SplitMix64: a seeded random policy.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

// ---------------------------------------------------------------- TextWorldExpress

#[test]
fn twx_gold_paths_score_one_in_every_game() {
    python();
    let suite = BridgeSuite::new("twx").unwrap();
    assert_eq!(suite.hello().env, "twx");
    assert_eq!(suite.tasks(Split::Train).len(), 800);
    assert_eq!(suite.tasks(Split::Test)[0], "twx/cookingworld/test/0");
    let mut env = suite.env().unwrap();
    for game in TWX_GAMES {
        for task in [format!("twx/{game}/train/1"), format!("twx/{game}/test/17")] {
            let start = env.reset(&task, 0).unwrap();
            assert!(start.prompt.starts_with("Goal: "), "{task}: {}", start.prompt);
            assert_eq!(start.max_steps, 50);
            let gold = env.gold().unwrap();
            assert!(!gold.is_empty() && gold.len() < 50, "{task}: {gold:?}");
            for action in &gold {
                if env.done() {
                    break; // some gold paths go on after the win
                }
                // CookingWorld's gold paths sometimes open a container that
                // is already open; the game does not list that as admissible,
                // so kiln would refuse it. It changes nothing: skip it.
                if !env.admissible_actions().contains(action) {
                    assert!(action.starts_with("open "), "{task}: gold action `{action}` is not admissible");
                    continue;
                }
                let observation = env.step(&act(action)).unwrap();
                assert!(!observation.is_error, "{task}: gold action `{action}` refused: {}", observation.content);
            }
            assert!(env.done(), "{task}: not done after the gold path");
            assert_eq!(env.score(), Score { reward: 1.0, success: true }, "{task}");
        }
    }
}

#[test]
fn twx_random_play_rarely_wins() {
    python();
    let mut env = BridgeSuite::new("twx:cookingworld,twc,arithmetic,sorting").unwrap().env().unwrap();
    let (mut episodes, mut wins) = (0, 0);
    for game in ["cookingworld", "twc", "arithmetic", "sorting"] {
        for seed in 0..5u64 {
            let mut rng = Rng(seed);
            env.reset(&format!("twx/{game}/train/{seed}"), seed).unwrap();
            while !env.done() {
                let actions = env.admissible_actions();
                env.step(&act(&actions[rng.below(actions.len())])).unwrap();
            }
            episodes += 1;
            wins += usize::from(env.score().reward == 1.0);
        }
    }
    assert!(wins * 2 < episodes, "a random policy reached 1.0 in {wins} of {episodes} episodes");
}

#[test]
fn twx_coin_offers_act_and_admissible_like_house() {
    python();
    let suite = bridge::suite("twx:coin").unwrap();
    assert_eq!(suite.name(), "twx:coin");
    let train = suite.tasks(Split::Train);
    assert_eq!((train.len(), train[3].as_str()), (100, "twx/coin/train/3"));
    let mut env = suite.make().unwrap();
    assert!(matches!(env.reset("twx/cookingworld/train/0", 0), Err(EnvError::UnknownTask { .. })));
    assert!(matches!(env.reset("twx/coin/train/100", 0), Err(EnvError::UnknownTask { .. })));
    let start = env.reset("twx/coin/test/4", 0).unwrap();
    assert!(
        start.prompt.starts_with("Goal: Your task is to search the environment and find the coin."),
        "{}",
        start.prompt
    );
    assert!(start.prompt.contains("\nYou are in the "), "{}", start.prompt);
    assert_eq!(start.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["act", "admissible"]);

    let listed = env.step(&call("admissible", "{}")).unwrap();
    assert!(!listed.is_error && listed.content.starts_with("Admissible actions:\n"), "{}", listed.content);
    assert!(listed.content.lines().any(|l| l == "look around"), "{}", listed.content);
    let wrong = env.step(&act("fly to the moon")).unwrap();
    assert!(
        wrong.is_error && wrong.content.contains("`fly to the moon` is not an admissible action"),
        "{}",
        wrong.content
    );
    let loose = env.step(&act("  LOOK   Around. ")).unwrap();
    assert!(!loose.is_error && loose.content.starts_with("You are in the "), "{}", loose.content);
    let malformed = env.step(&call("act", "{'command': 'look around'}")).unwrap();
    assert!(
        malformed.is_error && malformed.content.starts_with("Error: the arguments of `act`"),
        "{}",
        malformed.content
    );
    let unknown = env.step(&call("teleport", "{}")).unwrap();
    assert!(unknown.is_error && unknown.content.contains("unknown tool `teleport`"), "{}", unknown.content);
    assert!(!env.done());
    assert_eq!(env.score(), Score { reward: 0.0, success: false });
}

#[test]
fn same_task_and_seed_give_the_same_transcript_in_fresh_processes() {
    python();
    let transcript = || {
        let mut env = BridgeSuite::new("twx:twc").unwrap().env().unwrap();
        let mut out = vec![env.reset("twx/twc/train/7", 3).unwrap().prompt];
        for _ in 0..8 {
            let first = env.admissible_actions()[0].clone();
            out.push(env.step(&act(&first)).unwrap().content);
        }
        out
    };
    assert_eq!(transcript(), transcript());
}

#[test]
fn an_unknown_game_is_refused_by_the_bridge_with_the_games_it_knows() {
    python();
    let (env, reason) = broken(bridge::suite("twx:chess").map(|s| s.name().to_string()));
    assert_eq!(env, "twx:chess");
    assert!(reason.contains("twx_bridge.py` exited (exit status: 1) while kiln waited for its hello line"), "{reason}");
    assert!(reason.contains("| twx_bridge: unknown game(s) chess; known games: cookingworld, coin"), "{reason}");
}

// ---------------------------------------------------------------- BabyAI

#[test]
fn babyai_bot_solves_episodes() {
    python();
    let suite = BridgeSuite::new("babyai:GoToLocal,PickupLoc").unwrap();
    assert_eq!(suite.tasks(Split::Test).len(), 200);
    let mut env = suite.env().unwrap();
    for task in
        ["babyai/GoToLocal/train/0", "babyai/GoToLocal/test/1", "babyai/PickupLoc/train/2", "babyai/PickupLoc/test/3"]
    {
        let start = env.reset(task, 0).unwrap();
        let verb = if task.contains("GoTo") { "Goal: go to " } else { "Goal: pick up " };
        assert!(start.prompt.starts_with(verb), "{task}: {}", start.prompt);
        assert!(
            start.prompt.contains(" step") && start.prompt.ends_with("You carry nothing."),
            "{task}: {}",
            start.prompt
        );
        assert_eq!(env.admissible_actions(), ["done", "drop", "forward", "left", "pickup", "right", "toggle"]);
        while !env.done() {
            let action = env.bot_step().unwrap();
            let observation = env.step(&act(&action)).unwrap();
            assert!(!observation.is_error, "{task}: {}", observation.content);
        }
        assert_eq!(env.score(), Score { reward: 1.0, success: true }, "{task}");
    }
}

#[test]
fn babyai_views_are_described_relative_to_the_agent() {
    python();
    let mut env = BridgeSuite::new("babyai:GoToLocal").unwrap().env().unwrap();
    let start = env.reset("babyai/GoToLocal/train/3", 0).unwrap();
    // The layout of this seed, as seen from the start (checked by hand once).
    assert_eq!(
        start.prompt,
        "Goal: go to the red key\nYou see:\n- a green box 2 steps forward\n- a red box 1 step right and 1 step forward\n\
         - a grey ball 3 steps forward\n- a red key 2 steps right and 3 steps forward\n\
         - a red box 3 steps right and 2 steps forward\n- a red ball 3 steps right and 4 steps forward\n\
         - a wall 6 steps forward\n- a wall 1 step left\nYou carry nothing."
    );
    let turned = env.step(&act("left")).unwrap();
    assert!(turned.content.contains("- a green box 2 steps right\n"), "{}", turned.content);
}

// ---------------------------------------------------------------- fake bridges

const FAKE_BRIDGE: &str = r#"
import json, os, subprocess, sys, time
mode = sys.argv[1]
out = sys.stdout
def send(message):
    out.write(json.dumps(message) + "\n")
    out.flush()
if mode == "noise":
    print("Hello from the pygame community.")
if mode == "v2":
    send({"kiln_bridge": 2, "env": "fake", "games": []})
    sys.stdin.read()
    sys.exit(0)
send({"kiln_bridge": 1, "env": "fake", "games": ["room"]})
if mode == "family":
    helper = subprocess.Popen(["sleep", "3600"])
    with open(sys.argv[2], "w") as pids:
        pids.write(f"{os.getpid()} {helper.pid}")
state = {"obs": "You are in a room.", "goal": "leave the room", "actions": ["go out", "wait"],
         "score": 0.0, "done": False, "won": False, "lost": False, "max_steps": 5}
for line in sys.stdin:
    request = json.loads(line)
    op = request["op"]
    if op == "close":
        os._exit(0)
    if op == "tasks":
        send({"ok": True, "tasks": ["room/1", "room/2"]})
    elif op == "reset":
        if mode == "refuse":
            send({"ok": False, "error": "no such room: " + request["task"]})
        else:
            send({"ok": True, **state})
    elif op == "step":
        if mode == "crash":
            print("Traceback (most recent call last):", file=sys.stderr)
            print("EngineError: the engine fell over", file=sys.stderr, flush=True)
            os._exit(3)
        if mode in ("hang", "family"):
            time.sleep(3600)
        if mode == "garbage":
            out.write("step accepted, thank you\n")
            out.flush()
            continue
        if mode == "missing-field":
            send({"ok": True, "obs": "half a reply"})
            continue
        won = request["action"] == "go out"
        send({"ok": True, **state, "obs": "You are outside." if won else "Time passes.",
              "score": 1.0 if won else 0.0, "done": won, "won": won})
    else:
        send({"ok": False, "error": "unknown op " + op})
"#;

struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fake_bridge.py"), FAKE_BRIDGE).unwrap();
        Fake { dir }
    }

    fn launch(&self, mode: &str) -> Launch {
        let script = self.dir.path().join("fake_bridge.py");
        bridge::python_launch(&script, vec![mode.to_string(), self.dir.path().join("pids").display().to_string()])
            .unwrap()
    }

    fn env(&self, mode: &str, timeouts: Timeouts) -> Result<BridgeEnv, EnvError> {
        BridgeEnv::spawn("fake", self.launch(mode), timeouts)
    }
}

fn patient() -> Timeouts {
    Timeouts::uniform(Duration::from_secs(60))
}

#[test]
fn a_well_behaved_fake_bridge_plays_a_whole_task() {
    python();
    let fake = Fake::new();
    let suite = BridgeSuite::with_launch("fake", fake.launch("good"), patient()).unwrap();
    assert_eq!(suite.tasks(Split::Train), ["fake/room/1", "fake/room/2"]);
    let mut env = suite.make().unwrap();
    assert!(matches!(env.reset("fake/room/3", 0), Err(EnvError::UnknownTask { .. })));
    let start = env.reset("fake/room/1", 9).unwrap();
    assert_eq!((start.prompt.as_str(), start.max_steps), ("Goal: leave the room\nYou are in a room.", 5));
    assert_eq!(env.step(&act("wait")).unwrap().content, "Time passes.");
    assert_eq!(env.step(&act("Go out")).unwrap().content, "You are outside.");
    assert!(env.done());
    assert_eq!(env.score(), Score { reward: 1.0, success: true });
    let late = env.step(&act("wait")).unwrap();
    assert!(late.is_error && late.content.contains("the task is over"), "{}", late.content);
}

#[test]
fn the_example_bridge_in_the_protocol_docs_works_as_a_bridge_spec() {
    python();
    let docs = std::fs::read_to_string(bridge::project_root().join("docs/bridge-protocol.md")).unwrap();
    let example = docs.split("```python\n").nth(1).and_then(|rest| rest.split("```").next()).expect("a python example");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("rooms_bridge.py");
    std::fs::write(&script, example).unwrap();
    let suite = bridge::suite(&format!("bridge:{}", script.display())).unwrap();
    assert_eq!(suite.tasks(Split::Test), ["rooms/room/1", "rooms/room/2"]);
    let mut env = suite.make().unwrap();
    env.reset("rooms/room/2", 0).unwrap();
    assert_eq!(env.step(&act("go out")).unwrap().content, "You are outside.");
    assert_eq!(env.score(), Score { reward: 1.0, success: true });
}

#[test]
fn the_step_budget_from_the_reset_reply_ends_the_task() {
    python();
    let fake = Fake::new();
    let mut env = fake.env("good", patient()).unwrap();
    env.reset("fake/room/1", 0).unwrap();
    for _ in 0..5 {
        assert!(!env.done());
        env.step(&act("wait")).unwrap();
    }
    assert!(env.done());
    assert_eq!(env.score(), Score { reward: 0.0, success: false });
}

#[test]
fn a_bridge_that_crashes_mid_episode_is_broken_with_its_stderr_and_reset_restarts_it() {
    python();
    let fake = Fake::new();
    let mut env = fake.env("crash", patient()).unwrap();
    env.reset("fake/room/1", 0).unwrap();
    let (name, reason) = broken(env.step(&act("wait")));
    assert_eq!(name, "fake");
    assert!(
        reason.contains("fake_bridge.py` exited (exit status: 3) while kiln waited for its reply to `step`"),
        "{reason}"
    );
    assert!(reason.contains("| Traceback (most recent call last):\n  | EngineError: the engine fell over"), "{reason}");
    let (_, again) = broken(env.step(&act("wait")));
    assert!(
        again.contains("no longer running; `reset` starts a new one") && again.contains("exit status: 3"),
        "{again}"
    );
    // The run goes on: the next task gets a fresh process.
    let start = env.reset("fake/room/2", 0).unwrap();
    assert!(start.prompt.starts_with("Goal: leave the room"));
}

#[test]
fn a_bridge_that_hangs_is_killed_after_its_timeout() {
    python();
    let fake = Fake::new();
    let timeouts = Timeouts { step: Duration::from_secs(1), ..patient() };
    let mut env = fake.env("hang", timeouts).unwrap();
    env.reset("fake/room/1", 0).unwrap();
    let (_, reason) = broken(env.step(&act("wait")));
    assert!(reason.contains("did not send its reply to `step` within 1 s; kiln killed it"), "{reason}");
    assert!(reason.contains("(it wrote nothing to stderr)"), "{reason}");
}

#[test]
fn a_bridge_that_prints_garbage_is_broken_and_quoted() {
    python();
    let fake = Fake::new();
    let mut env = fake.env("garbage", patient()).unwrap();
    env.reset("fake/room/1", 0).unwrap();
    let (_, reason) = broken(env.step(&act("wait")));
    assert!(
        reason.contains("printed a line that is not a protocol reply in answer to `step`: step accepted, thank you"),
        "{reason}"
    );
}

#[test]
fn a_library_print_before_the_hello_is_caught() {
    python();
    let (_, reason) = broken(Fake::new().env("noise", patient()).map(|_| ()));
    assert!(
        reason.contains("did not start with a kiln bridge hello line")
            && reason.contains("its first line was: Hello from the pygame community."),
        "{reason}"
    );
}

#[test]
fn a_bridge_speaking_protocol_version_2_is_refused() {
    python();
    let (_, reason) = broken(Fake::new().env("v2", patient()).map(|_| ()));
    assert!(
        reason.contains("fake_bridge.py` speaks kiln bridge protocol version 2, but this kiln speaks version 1"),
        "{reason}"
    );
}

#[test]
fn a_reply_missing_fields_or_a_refusal_is_broken_with_the_bridges_words() {
    python();
    let fake = Fake::new();
    let mut env = fake.env("missing-field", patient()).unwrap();
    env.reset("fake/room/1", 0).unwrap();
    let (_, reason) = broken(env.step(&act("wait")));
    assert!(
        reason.contains("sent a reply to `step` that does not fit the protocol (missing field `actions`"),
        "{reason}"
    );

    let mut env = fake.env("refuse", patient()).unwrap();
    let (_, reason) = broken(env.reset("fake/room/1", 0));
    assert!(reason.contains("refused `reset`: no such room: room/1"), "{reason}");
    assert!(env.done());
}

#[test]
fn a_missing_bridge_executable_is_a_clear_error() {
    let launch = Launch { program: "/nonexistent/kiln-bridge".into(), args: Vec::new(), vars: Vec::new() };
    let (name, reason) = broken(BridgeEnv::spawn("mine", launch, patient()).map(|_| ()));
    assert_eq!(name, "mine");
    assert!(
        reason.contains("bridge `/nonexistent/kiln-bridge` could not be started") && reason.contains("No such file"),
        "{reason}"
    );
    let (_, reason) = broken(bridge::suite("bridge:/nonexistent/bridge.py").map(|_| ()));
    assert!(reason.contains("/nonexistent/bridge.py"), "{reason}");
}

#[test]
fn dropping_an_environment_kills_the_bridge_and_its_helpers() {
    python();
    let fake = Fake::new();
    let mut env = fake.env("family", patient()).unwrap();
    env.reset("fake/room/1", 0).unwrap();
    let pids = std::fs::read_to_string(fake.dir.path().join("pids")).unwrap();
    let pids: Vec<u32> = pids.split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert!(pids.iter().all(|pid| alive(*pid)), "{pids:?}");
    drop(env);
    // The bridge is reaped by the drop; its helper, reparented, is reaped by
    // init in its own time, so wait (boundedly) for it to be gone.
    assert!(!alive(pids[0]), "the bridge {} outlived its environment", pids[0]);
    let gone = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        !alive(pids[1])
    });
    assert!(gone, "the bridge's helper {} outlived it", pids[1]);
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).unwrap_or_default();
    // The state follows the parenthesised command name.
    stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
}
