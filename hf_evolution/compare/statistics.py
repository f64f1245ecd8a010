"""Figures over seeds: per model the mean, the sample standard deviation and a 95% interval of every quality figure,
and ranks that claim only what the intervals support (models whose intervals overlap share a rank). A model that
diverged with any seed has no mean quality figure and no rank: its per-seed figures say what happened."""

from __future__ import annotations

import math
import statistics

from scipy import stats

MIN_SEEDS_FOR_INTERVAL = 3
# The figures each task is ranked by, and whether lower is better.
RANKED_FIGURES = {
    "lm": {"test_stream_perplexity": True, "test_perplexity": True},
    "classify": {"test_accuracy": False, "test_f1_macro": False},
}
# Fields that name a run rather than measure it; the rest of a row's numbers are averaged over seeds.
IDENTITY = ("task", "model", "seed")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite(value) -> bool:
    """A number that is neither NaN nor infinite; None (how results.json holds those) is not one either."""
    return is_number(value) and math.isfinite(value)


def t_quantile(degrees_of_freedom: int) -> float:
    """The 0.975 quantile of Student's t distribution: the half-width factor of a two-sided 95% interval."""
    return float(stats.t.ppf(0.975, degrees_of_freedom))


def spread(values: list[float], min_for_interval: int = MIN_SEEDS_FOR_INTERVAL) -> dict:
    """Mean, sample standard deviation (None for one value) and the 95% t interval of the mean (None below
    `min_for_interval` values)."""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    interval = None
    if len(values) >= max(min_for_interval, 2):
        half = t_quantile(len(values) - 1) * std / math.sqrt(len(values))
        interval = [mean - half, mean + half]
    return {"mean": mean, "std": std, "ci95": interval}


def is_quality(key: str) -> bool:
    return key.startswith(("val_", "test_"))


def value_range(key: str) -> tuple[float, float]:
    """The values a quality figure can take: an interval of its mean is clipped to them (a t interval of three
    scattered seeds can reach below zero)."""
    if key.endswith("perplexity"):
        return 1.0, math.inf
    if key.endswith(("accuracy", "f1_macro")):
        return 0.0, 1.0
    return 0.0, math.inf  # losses and bits per byte


def summarize(runs: list[dict]) -> list[dict]:
    """One row per (task, model), in order of first appearance: quality figures as mean with `_std` and `_ci95`,
    other numbers (sizes, speeds, memory) as their mean, everything else as the first seed has it (the model's
    checkpoint too). `diverged_seeds` lists the seeds whose model diverged: with any, the quality figures are None
    (a mean over seeds with one of them not a number is not a number either)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in runs:
        groups.setdefault((row["task"], row["model"]), []).append(row)
    summary = []
    for (task, model), rows in groups.items():
        first = rows[0]
        diverged = [row["seed"] for row in rows if row.get("diverged")]
        aggregate = {"task": task, "model": model, "seeds": [row["seed"] for row in rows], "n_seeds": len(rows)}
        aggregate["diverged_seeds"] = diverged
        for key, value in first.items():
            if key in IDENTITY or key in ("curve", "diverged"):
                continue
            values = [row.get(key) for row in rows]
            numeric = all(is_number(value) or value is None for value in values)  # None: not a number
            if numeric and is_quality(key):
                if diverged or not all(map(is_finite, values)):
                    aggregate[key] = aggregate[f"{key}_std"] = aggregate[f"{key}_ci95"] = None
                    continue
                figures = spread(values)
                low, high = value_range(key)
                interval = figures["ci95"] and [max(figures["ci95"][0], low), min(figures["ci95"][1], high)]
                aggregate[key] = value if len(set(values)) == 1 else figures["mean"]
                aggregate[f"{key}_std"] = figures["std"]
                aggregate[f"{key}_ci95"] = interval
            elif numeric and any(map(is_number, values)):
                numbers = [value for value in values if is_finite(value)]
                # A size stays an integer; a speed missing for a seed is the mean of the others.
                aggregate[key] = statistics.fmean(numbers) if len(set(numbers)) > 1 else next(iter(numbers), None)
            else:
                aggregate[key] = value
        summary.append(aggregate)
    return summary


def ranking(summary_rows: list[dict], key: str, lower_is_better: bool) -> list[dict]:
    """Models in order of their mean `key`, each with the range of ranks its 95% interval allows: from one more than
    the number of models whose interval lies wholly on the better side of its own, to the number of models less
    those wholly on the worse side. A range wider than one rank (`tied`) is a difference the seeds do not resolve;
    without intervals (fewer than 3 seeds) nothing is resolved and the ranks are None. Models without the figure
    (diverged) come last, `diverged` and unranked."""
    sign = 1 if lower_is_better else -1
    measured = [row for row in summary_rows if is_finite(row.get(key))]
    ordered = sorted(measured, key=lambda row: sign * row[key])
    resolved = bool(ordered) and all(row.get(f"{key}_ci95") for row in ordered)

    def clearly_better(a, b) -> bool:
        low_a, high_a = a[f"{key}_ci95"]
        low_b, high_b = b[f"{key}_ci95"]
        return high_a < low_b if lower_is_better else low_a > high_b

    entries = []
    for row in ordered:
        entry = {"model": row["model"], "mean": row[key], "ci95": row.get(f"{key}_ci95"), "diverged": False}
        entry["best_rank"] = entry["worst_rank"] = None
        if resolved:
            entry["better_than"] = [other["model"] for other in ordered if clearly_better(row, other)]
            entry["best_rank"] = 1 + sum(clearly_better(other, row) for other in ordered)
            entry["worst_rank"] = len(ordered) - len(entry["better_than"])
        entry["tied"] = resolved and entry["best_rank"] != entry["worst_rank"]
        entries.append(entry)
    for row in summary_rows:
        if not is_finite(row.get(key)):
            entries.append(
                {
                    "model": row["model"],
                    "mean": None,
                    "ci95": None,
                    "diverged": True,
                    "best_rank": None,
                    "worst_rank": None,
                    "better_than": [],
                    "tied": False,
                }
            )
    return entries
