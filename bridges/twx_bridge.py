"""kiln bridge for TextWorldExpress (docs/bridge-protocol.md).

Usage: twx_bridge.py [--games coin,cookingworld] [--params "numLocations=3,..."] [--max-steps 50]

Tasks are ``<game>/<fold>/<seed>``: the train split is fold ``train`` seeds
0..99, the test split fold ``test`` seeds 0..99 (TextWorldExpress keeps its
folds' games apart). A task fixes its game completely; the run seed of
``reset`` does not change it. ``done`` follows the TextWorldExpress wrapper:
success, failure, a score of 1, or the step limit passed. ``score`` is the
game's own (it can be negative after a failure; kiln clamps it into [0, 1]).

Extra request, for tests: ``{"op": "gold"}`` -> ``{"ok": true, "gold": [...]}``,
the game's gold action sequence from the start of the episode.
"""

import kiln_bridge  # first: keeps library prints off the protocol stream

import argparse
import sys

from kiln_bridge import BridgeError, need_str, serve, split_task

GAMES = ["cookingworld", "coin", "twc", "mapreader", "arithmetic", "sorting", "simonsays", "peckingorder"]

# Smaller worlds than TextWorldExpress's defaults (cookingworld and coin
# default to 11 rooms and gold paths of 30-50 steps): every gold path fits in
# the step limit with room to explore.
DEFAULT_PARAMS = {
    "cookingworld": "numLocations=3,numIngredients=2,numDistractorItems=2,includeDoors=0",
    "coin": "numLocations=5,numDistractorItems=0,includeDoors=1",
    "twc": "numLocations=2,numItemsToPutAway=3,includeDoors=0",
    "mapreader": "numLocations=8,maxDistanceApart=3,includeDoors=0",
}

FOLDS = {"train": "train", "test": "test"}
SEEDS_PER_SPLIT = 100
SEEDS_PER_FOLD = 1000  # what TextWorldExpress generates per fold


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--games", default=",".join(GAMES))
    parser.add_argument("--params", default=None, help="game parameters, only with a single game")
    parser.add_argument("--max-steps", type=int, default=50)
    args = parser.parse_args()
    games = [g.strip() for g in args.games.split(",") if g.strip()]
    unknown = [g for g in games if g not in GAMES]
    if unknown or not games:
        sys.exit(f"twx_bridge: unknown game(s) {', '.join(unknown) or '(none given)'}; known games: {', '.join(GAMES)}")
    if args.params is not None and len(games) != 1:
        sys.exit("twx_bridge: --params needs exactly one game in --games")
    params = {g: (args.params if args.params is not None else DEFAULT_PARAMS.get(g, "")) for g in games}
    bridge = Twx(games, params, args.max_steps)
    serve("twx", GAMES, bridge.handle, on_close=bridge.stop_jvm)


class Twx:
    def __init__(self, games, params, max_steps):
        self.games = games
        self.params = params
        self.max_steps = max_steps
        self.env = None  # the JVM starts on the first reset, not at hello
        self.loaded = None
        self.state = None

    def handle(self, op, request):
        if op == "tasks":
            split = need_str(request, "split")
            if split not in FOLDS:
                raise BridgeError(f"unknown split `{split}`; splits: train, test")
            return {"tasks": [f"{g}/{split}/{s}" for g in self.games for s in range(SEEDS_PER_SPLIT)]}
        if op == "reset":
            return self.reset(need_str(request, "task"))
        if op == "step":
            return self.step(need_str(request, "action"))
        if op == "gold":
            if self.env is None or self.state is None:
                raise BridgeError("`gold` needs an episode; send `reset` first")
            return {"gold": list(self.env.getGoldActionSequence())}
        raise BridgeError(f"unknown op `{op}`; ops: tasks, reset, step, gold, close")

    def stop_jvm(self):
        """Kill and reap the JVM, rather than leave it to exit on its own."""
        if self.env is not None:
            java = self.env._gateway.java_process
            java.kill()
            java.wait(timeout=10)

    def reset(self, task):
        game, split, seed = split_task(task, 3)
        if game not in self.games:
            raise BridgeError(f"task `{task}`: game `{game}` is not served here; games: {', '.join(self.games)}")
        if split not in FOLDS or seed >= SEEDS_PER_FOLD:
            raise BridgeError(f"task `{task}`: splits are train and test, seeds 0..{SEEDS_PER_FOLD - 1}")
        if self.env is None:
            from textworld_express import TextWorldExpressEnv

            self.env = TextWorldExpressEnv(envStepLimit=self.max_steps)
        if self.loaded != game:
            obs, info = self.env.reset(seed=seed, gameFold=FOLDS[split], gameName=game,
                                       gameParams=self.params[game], generateGoldPath=True)
            self.loaded = game
        else:
            obs, info = self.env.reset(seed=seed, gameFold=FOLDS[split], generateGoldPath=True)
        self.state = reply(obs, info, done=False)
        return {**self.state, "goal": info["taskDescription"], "max_steps": self.max_steps}

    def step(self, action):
        if self.state is None:
            raise BridgeError("`step` before `reset`")
        if self.state["done"]:
            raise BridgeError("the episode is over; send `reset` to start another")
        obs, _reward, done, info = self.env.step(action)
        self.state = reply(obs, info, done=bool(done))
        return self.state


def reply(obs, info, done):
    return {
        "obs": obs,
        "actions": sorted(info["validActions"]),
        "score": float(info["score"]),
        "done": done,
        "won": bool(info["tasksuccess"]),
        "lost": bool(info["taskfailure"]),
    }


if __name__ == "__main__":
    main()
