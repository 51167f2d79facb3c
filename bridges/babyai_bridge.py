"""kiln bridge for MiniGrid's BabyAI levels (docs/bridge-protocol.md).

Usage: babyai_bridge.py [--levels GoToLocal,PickupLoc]

Tasks are ``<level>/<split>/<n>`` with n in 0..99. The level's generator seed
is n for the train split and 1_000_000 + n for the test split, so the splits
never share a layout; the run seed of ``reset`` does not change the task.

BabyAI has no text observations. Like BALROG, this bridge describes the
agent's 7x7 egocentric view in words: every visible object with its place
relative to the agent ("a red ball 2 steps left and 1 step forward"), the
nearest wall straight ahead, left and right, and what the agent carries.
Cells hidden behind walls or closed doors are not described.

The actions are MiniGrid's seven: left, right, forward, pickup, drop, toggle,
done (always all admissible). Success is a positive reward (BabyAI gives
1 - 0.9 * steps / max_steps on success, 0 otherwise); ``score`` is 1 on
success, else 0. ``done`` is MiniGrid's terminated or truncated.

Extra request, for tests: ``{"op": "bot_step"}`` -> ``{"ok": true, "action":
"forward"}``, the next action of MiniGrid's BabyAIBot, which replans from the
current state each time it is asked.
"""

import kiln_bridge  # first: keeps library prints off the protocol stream

import argparse
import sys

from kiln_bridge import BridgeError, need_str, serve, split_task

DEFAULT_LEVELS = ["GoToRedBall", "GoToLocal", "PickupLoc", "OpenDoor", "PutNextLocal"]
SEEDS_PER_SPLIT = 100
TEST_SEED_OFFSET = 1_000_000
ACTIONS = ["left", "right", "forward", "pickup", "drop", "toggle", "done"]
VIEW = 7  # MiniGrid's default agent_view_size; the agent sits at (3, 6) facing "up"


def main():
    import gymnasium as gym
    import minigrid  # registers the BabyAI-* environments

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", default=",".join(DEFAULT_LEVELS))
    args = parser.parse_args()
    known = sorted(name[len("BabyAI-"):-len("-v0")] for name in gym.registry
                   if name.startswith("BabyAI-") and name.endswith("-v0"))
    levels = [level.strip() for level in args.levels.split(",") if level.strip()]
    unknown = [level for level in levels if level not in known]
    if unknown or not levels:
        sys.exit(f"babyai_bridge: unknown level(s) {', '.join(unknown) or '(none given)'}; known levels: {', '.join(known)}")
    serve("babyai", known, BabyAI(levels).handle)


class BabyAI:
    def __init__(self, levels):
        self.levels = levels
        self.envs = {}
        self.env = None
        self.bot = None
        self.state = None

    def handle(self, op, request):
        if op == "tasks":
            split = need_str(request, "split")
            if split not in ("train", "test"):
                raise BridgeError(f"unknown split `{split}`; splits: train, test")
            return {"tasks": [f"{level}/{split}/{n}" for level in self.levels for n in range(SEEDS_PER_SPLIT)]}
        if op == "reset":
            return self.reset(need_str(request, "task"))
        if op == "step":
            return self.step(need_str(request, "action"))
        if op == "bot_step":
            if self.state is None or self.state["done"]:
                raise BridgeError("`bot_step` needs a running episode; send `reset` first")
            if self.bot is None:
                from minigrid.utils.baby_ai_bot import BabyAIBot

                self.bot = BabyAIBot(self.env.unwrapped)
            return {"action": ACTIONS[int(self.bot.replan())]}
        raise BridgeError(f"unknown op `{op}`; ops: tasks, reset, step, bot_step, close")

    def reset(self, task):
        level, split, n = split_task(task, 3)
        if level not in self.levels:
            raise BridgeError(f"task `{task}`: level `{level}` is not served here; levels: {', '.join(self.levels)}")
        if split not in ("train", "test") or n >= SEEDS_PER_SPLIT:
            raise BridgeError(f"task `{task}`: splits are train and test, numbers 0..{SEEDS_PER_SPLIT - 1}")
        if level not in self.envs:
            import gymnasium as gym

            self.envs[level] = gym.make(f"BabyAI-{level}-v0")
        self.env = self.envs[level]
        obs, _ = self.env.reset(seed=n if split == "train" else TEST_SEED_OFFSET + n)
        self.bot = None
        self.state = {"obs": describe(obs, self.env.unwrapped), "actions": sorted(ACTIONS), "score": 0.0,
                      "done": False, "won": False, "lost": False}
        return {**self.state, "goal": obs["mission"], "max_steps": int(self.env.unwrapped.max_steps)}

    def step(self, action):
        if self.state is None:
            raise BridgeError("`step` before `reset`")
        if self.state["done"]:
            raise BridgeError("the episode is over; send `reset` to start another")
        if action not in ACTIONS:
            raise BridgeError(f"unknown action `{action}`; actions: {', '.join(ACTIONS)}")
        obs, reward, terminated, truncated, _ = self.env.step(ACTIONS.index(action))
        won = reward > 0
        done = bool(terminated or truncated)
        self.state = {"obs": describe(obs, self.env.unwrapped), "actions": sorted(ACTIONS),
                      "score": 1.0 if won else 0.0, "done": done, "won": won, "lost": done and not won}
        return self.state


def describe(obs, env):
    """The egocentric view in words."""
    from minigrid.core.constants import IDX_TO_COLOR, IDX_TO_OBJECT

    image = obs["image"]  # image[x, y] = (object, colour, state); x left->right, y far->near
    me_x, me_y = VIEW // 2, VIEW - 1
    things, walls = [], {}
    for x in range(VIEW):
        for y in range(VIEW):
            if (x, y) == (me_x, me_y):
                continue  # the agent's own cell shows what it carries
            kind = IDX_TO_OBJECT[int(image[x, y, 0])]
            right, forward = x - me_x, me_y - y
            if kind in ("unseen", "empty", "floor"):
                continue
            if kind == "wall":
                direction = "forward" if right == 0 else ("left" if forward == 0 and right < 0 else
                                                          "right" if forward == 0 else None)
                distance = abs(right) + forward
                if direction and distance < walls.get(direction, (VIEW + 1, ""))[0]:
                    walls[direction] = (distance, f"a wall {place(right, forward)}")
                continue
            name = noun(kind, IDX_TO_COLOR[int(image[x, y, 1])], int(image[x, y, 2]))
            things.append((abs(right) + forward, right, forward, f"{name} {place(right, forward)}"))
    lines = [text for *_, text in sorted(things)]
    lines += [walls[d][1] for d in ("forward", "left", "right") if d in walls]
    seen = "You see:\n" + "\n".join(f"- {line}" for line in lines) if lines else "You see nothing around you."
    carried = env.carrying
    holding = f"You carry {noun(carried.type, carried.color, 0)}." if carried else "You carry nothing."
    return f"{seen}\n{holding}"


def noun(kind, colour, state):
    if kind == "door":
        return f"{('an open', 'a closed', 'a locked')[state]} {colour} door"
    if kind == "lava":
        return "lava"
    if kind == "goal":
        return "the goal square"
    return f"a {colour} {kind}"


def place(right, forward):
    parts = []
    if right:
        parts.append(f"{abs(right)} step{'s' if abs(right) != 1 else ''} {'left' if right < 0 else 'right'}")
    if forward:
        parts.append(f"{forward} step{'s' if forward != 1 else ''} forward")
    return " and ".join(parts)


if __name__ == "__main__":
    main()
