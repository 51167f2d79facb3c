#!/usr/bin/env python3
"""Summarize a `cargo bench` run of host/benches/sandbox.rs against kiln's targets.

Reads criterion's results (every `new/benchmark.json` with its
`new/estimates.json` under the criterion directory) and the memory
measurement the bench writes beside them (`kiln-memory.json`), and writes one
JSON file with the median of every benchmark in nanoseconds, the ratios the
targets are stated in, and whether each target is met. Prints the same as a
table. Targets come from /work/shared/PERFORMANCE.md; docs/performance.md
explains each measure.

Usage: scripts/bench-summary.py [--criterion DIR] [--out FILE]
(defaults: target/criterion and target/bench-summary.json at the repository root)

Only the standard library is used, so `make bench` needs no extra install.
"""

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (key, what, how to compute the value from medians, comparison, bound, unit)
# A value is computed only when every benchmark it needs was measured.
TARGETS = [
    ("hook_per_processor_ns", "hook overhead, one processor reading the last message (10,000 msgs)",
     lambda m: m["hook/last-message/10000"], "<=", 1_000, "ns"),
    ("hook_flatness", "the same, 10,000 vs 10 messages",
     lambda m: m["hook/last-message/10000"] / m["hook/last-message/10"], "<=", 1.2, "x"),
    ("hook_ten_ns", "10-processor before-model hook at 10,000 messages",
     lambda m: m["hook/ten/10000"], "<=", 15_000, "ns"),
    ("hook_ten_flatness", "10-processor hook, 10,000 vs 10 messages",
     lambda m: m["hook/ten/10000"] / m["hook/ten/10"], "<=", 1.2, "x"),
    ("step_ns", "harness overhead of one full step, 10 processors, 10,000 messages",
     lambda m: m["step/ten/10000"], "<=", 1_000_000, "ns"),
    ("step_flatness", "one full step, 10,000 vs 10 messages",
     lambda m: m["step/ten/10000"] / m["step/ten/10"], "<=", 1.2, "x"),
    ("loop_guard_wasm_vs_native", "loop-guard as a Wasm component vs native, a real shop episode",
     lambda m: m["loop-guard/wasm"] / m["loop-guard/native"], "<=", 2.0, "x"),
    ("instantiate_ten_ns", "new task: instantiate a 10-processor harness (pooling)",
     lambda m: m["instantiate/ten/pooling"], "<=", 100_000, "ns"),
    ("swap_ns", "hot swap of a cached component",
     lambda m: m["swap/replace"], "<=", 1_000_000, "ns"),
    ("load_compile_vs_cache", "Cranelift compile vs code-cache load",
     lambda m: m["load/compile"] / m["load/cache"], ">=", 25.0, "x"),
]

# Ratios reported without a target.
INFORMATIVE = [
    ("loop_guard_short_wasm_vs_native", "loop-guard component vs native on ~80-byte inputs",
     lambda m: m["loop-guard/wasm-short"] / m["loop-guard/native-short"]),
    ("loop_guard_floor_vs_native", "the crossing alone (tool-reader: same data, no logic) vs loop-guard's native logic",
     lambda m: m["loop-guard/floor"] / m["loop-guard/native"]),
    ("loop_guard_guest_logic_vs_native", "loop-guard's logic in Wasm (wasm minus floor) vs native",
     lambda m: (m["loop-guard/wasm"] - m["loop-guard/floor"]) / m["loop-guard/native"]),
    ("fuel_overhead", "fuel metering on vs off, loop-guard shop workload",
     lambda m: m["fuel/on"] / m["fuel/off"]),
    ("instrumentation_overhead", "fuel and epoch checks on vs neither, loop-guard shop workload",
     lambda m: m["fuel/on"] / m["fuel/bare"]),
    ("instantiate_on_demand_vs_pooling", "10-processor instantiation, on-demand vs pooling",
     lambda m: m["instantiate/ten/on-demand"] / m["instantiate/ten/pooling"]),
    ("hook_ten_vs_one", "10 processors vs 1 at before-model (10,000 msgs)",
     lambda m: m["hook/ten/10000"] / m["hook/last-message/10000"]),
]

MEMORY_TARGET_BYTES = 1 << 20  # <= 1 MiB resident per live processor instance
CONCURRENCY_TARGET_BYTES = 4 << 30  # 1,000 tasks of 10 processors at once within 4 GiB


def read_results(criterion_dir: Path):
    """Every benchmark criterion measured, by full id."""
    results = {}
    for bench_file in sorted(criterion_dir.glob("**/new/benchmark.json")):
        estimates_file = bench_file.with_name("estimates.json")
        try:
            bench = json.loads(bench_file.read_text())
            estimates = json.loads(estimates_file.read_text())
        except (OSError, ValueError) as error:
            print(f"warning: skipping {bench_file.parent}: {error}", file=sys.stderr)
            continue
        median = estimates["median"]
        mtime = datetime.datetime.fromtimestamp(estimates_file.stat().st_mtime, datetime.timezone.utc)
        results[bench["full_id"]] = {
            "median_ns": median["point_estimate"],
            "median_ci_ns": [median["confidence_interval"]["lower_bound"], median["confidence_interval"]["upper_bound"]],
            "mean_ns": estimates["mean"]["point_estimate"],
            "measured_at": mtime.isoformat(timespec="seconds"),
        }
    return results


def evaluate(medians):
    targets, ratios = [], {}
    for key, what, compute, op, bound, unit in TARGETS:
        try:
            value = compute(medians)
        except KeyError as missing:
            shown = fmt_ns(bound) if unit == "ns" else f"{bound}x"
            targets.append({"key": key, "measure": what, "value": None, "target": f"{op} {shown}",
                            "met": None, "missing": str(missing)})
            continue
        met = value <= bound if op == "<=" else value >= bound
        shown = fmt_ns(bound) if unit == "ns" else f"{bound}x"
        targets.append({"key": key, "measure": what, "value": value, "unit": unit, "target": f"{op} {shown}", "met": met})
        if unit == "x":
            ratios[key] = value
    for key, what, compute in INFORMATIVE:
        try:
            ratios[key] = compute(medians)
        except KeyError:
            pass
    return targets, ratios


def load_average():
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.3f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--criterion", type=Path, default=Path(os.environ.get("CRITERION_HOME", ROOT / "target" / "criterion")))
    parser.add_argument("--out", type=Path, default=ROOT / "target" / "bench-summary.json")
    args = parser.parse_args()

    results = read_results(args.criterion)
    if not results:
        sys.exit(f"error: no criterion results under {args.criterion}\nhint: run `make bench` (or `cargo bench -p kiln --bench sandbox`) first")
    medians = {name: r["median_ns"] for name, r in results.items()}
    targets, ratios = evaluate(medians)
    memory = None
    memory_file = args.criterion / "kiln-memory.json"
    if memory_file.exists():
        memory = json.loads(memory_file.read_text())
        for name, m in memory.items():
            m["meets_1_mib_target"] = m["resident_bytes_per_instance"] <= MEMORY_TARGET_BYTES
    concurrency = None
    concurrency_file = args.criterion / "kiln-concurrency.json"
    if concurrency_file.exists():
        concurrency = json.loads(concurrency_file.read_text())
        concurrency["meets_4_gib_target"] = concurrency["resident_bytes_after"] <= CONCURRENCY_TARGET_BYTES

    summary = {
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average": load_average(),
        "cpus": os.cpu_count(),
        "benchmarks": results,
        "ratios": ratios,
        "targets": targets,
        "memory_per_instance": memory,
        "concurrent_tasks": concurrency,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")

    width = max(len(n) for n in results)
    print(f"\nkiln bench summary (load average {summary['load_average']}, {summary['cpus']} cpus)")
    print(f"{'benchmark':<{width}}  {'median':>12}")
    for name in sorted(results):
        print(f"{name:<{width}}  {fmt_ns(medians[name]):>12}")
    print("\ntargets:")
    for t in targets:
        if t["value"] is None:
            print(f"  [ -- ] {t['measure']}: not measured ({t['missing']} missing)")
            continue
        value = f"{t['value']:.2f}x" if t["unit"] == "x" else fmt_ns(t["value"])
        print(f"  [{'ok' if t['met'] else 'MISS':^4}] {t['measure']}: {value} (target {t['target']})")
    print("other ratios:")
    for key, _, _ in INFORMATIVE:
        if key in ratios:
            print(f"  {key}: {ratios[key]:.2f}x")
    if memory:
        print("memory per live loop-guard instance:")
        for name, m in memory.items():
            print(f"  {name}: {m['resident_bytes_per_instance'] / 1024:.0f} KiB over {m['instances']} instances "
                  f"({'ok' if m['meets_1_mib_target'] else 'MISS'}, target <= 1 MiB)")
    if concurrency:
        c = concurrency
        print(f"{c['tasks']} tasks x {c['processors_per_task']} processors live at once: "
              f"{c['resident_bytes_after'] / (1 << 20):.0f} MiB resident "
              f"({'ok' if c['meets_4_gib_target'] else 'MISS'}, target <= 4 GiB), "
              f"instantiated in {c['instantiate_seconds'] * 1e3:.0f} ms, a step in each in {c['step_seconds'] * 1e3:.0f} ms")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
