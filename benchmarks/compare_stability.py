"""Does the main job give an answer? `hf-evolution compare --seeds 3` at the default preset, judged against targets:
seeds agree (std/mean of the test stream perplexity <= 3%, of the test accuracy <= 3 points), no model sits on the
unigram plateau, the gated families and GPT-2 reach <= 2.0 test bits per byte, and the ranks resolve.

python benchmarks/compare_stability.py            # 3 seeds at the default preset (about 45 min on 2 CPU cores)
python benchmarks/compare_stability.py --smoke    # the smoke preset: checks that the benchmark runs

The run folder is kept (benchmarks/results/compare_stability_run, or --output): a killed benchmark resumes it with
`compare --resume`, and a finished one is judged again without training. Writes
benchmarks/results/compare_stability.json: each family's per-seed figures, their spread, the resolved pairs, the
commit and the machine.
"""

import argparse
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

from common import RESULTS_DIR, check, print_checks, write_results

from hf_evolution.compare.statistics import ranking

SEEDS = 3
MAX_PPL_SPREAD = 0.03  # std/mean of the test stream perplexity
MAX_ACCURACY_SPREAD = 0.03  # std of the test accuracy, absolute
PLATEAU_MARGIN = 0.05  # a model whose test loss is within 5% of the unigram loss has learned little more
MAX_BITS_PER_BYTE = 2.0  # every language model but the vanilla RNN, in each seed
MAX_TIE_WIDTH = 0.05  # an unresolved pair's intervals, as a fraction of the mean: a real tie, not noise
RESOLVED_PAIRS = [("rnn", "lstm"), ("rnn", "gru"), ("rnn", "gpt2")]  # (worse, better) that 3 seeds must resolve


def run_compare(output: Path, smoke: bool) -> dict:
    """The comparison in `output`: started, resumed after a kill, or (finished) only read."""
    results = output / "results.json"
    fresh = ["--seeds", str(SEEDS), *(["--preset", "smoke"] if smoke else [])]
    options = ["--resume"] if results.is_file() else fresh
    subprocess.run(
        [sys.executable, "-m", "hf_evolution.cli", "compare", *options, "--output", str(output)], check=True
    )
    return json.loads(results.read_text())


def per_seed(results: dict, task: str, key: str) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {}
    for row in results["runs"]:
        if row["task"] == task:
            figures.setdefault(row["model"], []).append(row.get(key))
    return figures


def judge(results: dict) -> tuple[dict, list[dict]]:
    """Per-family figures and the checks against the targets."""
    checks, figures = [], {"lm": {}, "classify": {}}
    summary = {(row["task"], row["model"]): row for row in results["summary"]}

    def std(task: str, model: str, key: str) -> float:
        """The seeds' standard deviation as compare's summary has it; none (one seed, or diverged) fails."""
        value = summary[task, model].get(f"{key}_std")
        return math.inf if value is None else value

    perplexities = per_seed(results, "lm", "test_stream_perplexity")
    bits = per_seed(results, "lm", "test_stream_bits_per_byte")
    unigram = per_seed(results, "lm", "train_unigram_loss")
    for model, values in perplexities.items():
        losses = [math.log(value) if value else math.inf for value in values]
        ratios = [loss / reference for loss, reference in zip(losses, unigram[model], strict=True)]
        spread = std("lm", model, "test_stream_perplexity") / summary["lm", model]["test_stream_perplexity"]
        figures["lm"][model] = {
            "test_stream_perplexity": values,
            "test_stream_bits_per_byte": bits[model],
            "test_stream_loss_over_unigram": [round(ratio, 4) for ratio in ratios],
            "std_over_mean": spread,
        }
        checks.append(check(f"lm {model}: test stream perplexity std/mean", spread, MAX_PPL_SPREAD, False))
        checks.append(check(f"lm {model}: worst seed's loss / unigram loss", max(ratios), 1 - PLATEAU_MARGIN, False))
        if model != "rnn":
            worst = max(value if value is not None else math.inf for value in bits[model])
            checks.append(
                check(f"lm {model}: worst seed's test stream bits/byte", worst, MAX_BITS_PER_BYTE, False, "")
            )
    for model, values in per_seed(results, "classify", "test_accuracy").items():
        spread = std("classify", model, "test_accuracy")
        figures["classify"][model] = {"test_accuracy": values, "std": spread}
        checks.append(check(f"classify {model}: test accuracy std", spread, MAX_ACCURACY_SPREAD, False, ""))
    lm_rows = {model: row for (task, model), row in summary.items() if task == "lm"}
    entries = {entry["model"]: entry for entry in ranking(list(lm_rows.values()), "test_stream_perplexity", True)}
    resolved = sorted((model, other) for model, entry in entries.items() for other in entry.get("better_than", []))
    figures["resolved_lm_pairs"] = [f"{better} < {worse}" for better, worse in resolved]
    for worse, better in RESOLVED_PAIRS:
        if worse in entries and better in entries:
            value = float((better, worse) in resolved)
            checks.append(check(f"lm: {better} resolved better than {worse}", value, 1.0, True, ""))
    for a, b in itertools.combinations(entries, 2):
        if (a, b) in resolved or (b, a) in resolved:
            continue
        widths = [interval_width(lm_rows[model]) for model in (a, b)]
        checks.append(check(f"lm: unresolved {a} / {b}, widest interval / mean", max(widths), MAX_TIE_WIDTH, False))
    return figures, checks


def interval_width(row: dict) -> float:
    interval = row.get("test_stream_perplexity_ci95")
    if not interval or not row.get("test_stream_perplexity"):
        return math.inf
    return (interval[1] - interval[0]) / row["test_stream_perplexity"]


def commit() -> str:
    here = Path(__file__).resolve().parent
    described = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=here, capture_output=True, text=True)
    return described.stdout.strip() or "unknown"


def main(smoke: bool = False, output: Path | None = None) -> dict:
    output = output or RESULTS_DIR / f"compare_stability_run{'_smoke' if smoke else ''}"
    results = run_compare(output, smoke)
    figures, checks = judge(results)
    print_checks("compare at the default preset over 3 seeds" if not smoke else "compare, smoke preset", checks)
    payload = {
        "command": f"hf-evolution compare --seeds {SEEDS}" + (" --preset smoke" if smoke else ""),
        "commit": commit(),
        "preset": results["settings"]["preset_name"],
        "seeds": results["settings"]["seeds"],
        "figures": figures,
        "checks": checks,
        "compare_environment": results["environment"],
    }
    write_results("compare_stability", payload, smoke=smoke)
    return payload


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="the smoke preset: minutes, checks that it runs")
    parser.add_argument("--output", type=Path, help="the comparison's run folder (kept, resumed)")
    arguments = parser.parse_args()
    payload = main(arguments.smoke, arguments.output)
    sys.exit(0 if all(item["passed"] for item in payload["checks"]) else 1)
