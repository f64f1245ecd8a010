"""Shared helpers for the benchmarks: interleaved timing, result files and the PASS/FAIL table (the fastest-of-N timer,
the environment record and atomic files come from `hf_evolution.runs`)."""

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from hf_evolution.runs import environment, write_json

RESULTS_DIR = Path(__file__).parent / "results"


def interleaved_times(
    fns: dict, repeats: int = 5, warmup: int = 1, summary: Callable[[list[float]], float] = statistics.median
) -> dict:
    """The median time of each function (or another `summary` of its times, such as `min`), measured in alternation so
    that drift in machine speed hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: summary(values) for name, values in samples.items()}


@contextlib.contextmanager
def torch_threads(count: int):
    """torch's intra-op threads set to `count` for the block, then back to what they were."""
    default = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(default)


def check(name: str, value: float, target: float, higher_is_better: bool, unit: str = "x") -> dict:
    passed = value >= target if higher_is_better else value <= target
    return {
        "name": name,
        "value": round(value, 4),
        "target": f"{'>=' if higher_is_better else '<='} {target}{unit}",
        "passed": passed,
    }


def write_results(name: str, payload: dict, smoke: bool = False) -> Path:
    """benchmarks/results/<name>.json, or <name>_smoke.json for the tiny sizes, so a smoke run never hides a full one."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}{'_smoke' if smoke else ''}.json"
    return write_json(path, {"machine": environment(), **payload})


def print_checks(title: str, checks: list[dict]) -> None:
    print(f"\n{title}")
    for item in checks:
        status = "PASS" if item["passed"] else "FAIL"
        print(f"  {status}  {item['name']}: {item['value']} (target {item['target']})")


def run_from_command_line(main, description: str, smoke_help: str) -> None:
    """What `python benchmarks/<name>.py [--smoke]` does for every benchmark."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help=smoke_help)
    main(parser.parse_args().smoke)
