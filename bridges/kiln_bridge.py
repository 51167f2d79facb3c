"""The Python side of the kiln bridge protocol, version 1 (docs/bridge-protocol.md).

Import this module before anything else: importing it points ``sys.stdout`` at
stderr, so that a library that prints (pygame greets on import, py4j logs)
cannot corrupt the protocol. Replies go to the original stdout, which only
:func:`serve` writes to.

A bridge calls ``serve(env, games, handler)``. The handler gets ``(op,
request)`` for every request but ``close`` and returns the reply's fields
(``ok: true`` is added), or raises :class:`BridgeError` for an ``ok: false``
reply. Any other exception is reported the same way, with its traceback on
stderr. ``serve`` never returns: it ends the process with ``os._exit(0)``,
which skips the interpreter teardown (py4j's can hang or print).
"""

import json
import os
import sys
import traceback

#: The protocol version this module speaks; the hello line announces it.
PROTOCOL = 1

# The JVM writes a perf-data folder under /tmp unless told not to. Set before
# any bridge launches one.
os.environ.setdefault("JAVA_TOOL_OPTIONS", "-XX:-UsePerfData")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

_replies = sys.stdout
sys.stdout = sys.stderr


class BridgeError(Exception):
    """A request the bridge cannot serve; becomes ``{"ok": false, "error": ...}``."""


def log(*parts):
    """Diagnostics go to stderr; kiln keeps the last lines for its error messages."""
    print(*parts, file=sys.stderr, flush=True)


def _send(message):
    _replies.write(json.dumps(message, ensure_ascii=False) + "\n")
    _replies.flush()


def serve(env, games, handler, on_close=None):
    """Say hello, then answer requests from stdin until ``close`` or end of input.

    ``on_close`` runs before the exit: the place to stop and reap helper
    processes (a JVM), which would otherwise outlive the bridge.
    """
    _send({"kiln_bridge": PROTOCOL, "env": env, "games": list(games)})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            request = json.loads(line)
        except ValueError as err:
            _send({"ok": False, "error": f"the request is not JSON ({err}): {line[:200]}"})
            continue
        op = request.get("op") if isinstance(request, dict) else None
        if op == "close":
            break
        try:
            reply = handler(op, request)
            _send({"ok": True, **reply})
        except BridgeError as err:
            _send({"ok": False, "error": str(err)})
        except Exception as err:  # a bug or a library failure: report it, keep serving
            traceback.print_exc(file=sys.stderr)
            _send({"ok": False, "error": f"{type(err).__name__} while serving `{op}`: {err}"})
    if on_close is not None:
        try:
            on_close()
        except Exception:
            traceback.print_exc(file=sys.stderr)
    sys.stderr.flush()
    os._exit(0)


def split_task(task, parts):
    """``"a/b/3"`` -> ``["a", "b", 3]`` (the last part an index), or BridgeError."""
    pieces = task.split("/") if isinstance(task, str) else []
    if len(pieces) != parts or not pieces[-1].isdigit():
        raise BridgeError(f"task `{task}` is not of the form {'/'.join(['…'] * (parts - 1))}/<number>")
    return pieces[:-1] + [int(pieces[-1])]


def need_str(request, key):
    value = request.get(key)
    if not isinstance(value, str):
        raise BridgeError(f"`{request.get('op')}` needs a string `{key}`")
    return value
