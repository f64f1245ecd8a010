"""The fits of `probe scaling`: a power law per line of points, L(N) = (N_c / N)^alpha (+ L_inf), fitted per seed and
on the mean over seeds, and the sizes at which two lines' fits cross, each with its 95% interval over seeds."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
from scipy.optimize import brentq, curve_fit

from ..compare.statistics import spread
from ..reporting import format_value

FIT_FORMS = {"power": "L(N) = (N_c / N)^alpha", "saturating": "L(N) = (N_c / N)^alpha + L_inf"}


def power_law(x, alpha, amplitude):
    """ln L of L = (N_c / N)^alpha, with x = ln(N / N_0) and amplitude = alpha ln(N_c / N_0)."""
    return amplitude - alpha * x


def saturating_law(x, alpha, amplitude, floor):
    """ln L of L = (N_c / N)^alpha + L_inf."""
    return np.log(np.exp(amplitude - alpha * x) + floor)


def fit_power_law(parameters, losses, form: str = "power") -> dict | None:
    """Least squares on ln L (relative errors, as the log-log plot shows them); None with too few finite points.
    N is measured from N_0, the geometric mean of the sizes, which keeps the problem well conditioned."""
    parameters, losses = np.asarray(parameters, dtype=float), np.asarray(losses, dtype=float)
    keep = np.isfinite(losses) & (losses > 0)
    parameters, losses = parameters[keep], losses[keep]
    if len(parameters) < (3 if form == "power" else 4):
        return None
    reference = float(np.exp(np.log(parameters).mean()))
    x, y = np.log(parameters / reference), np.log(losses)
    if form == "power":
        slope, intercept = np.polyfit(x, y, 1)
        (alpha, amplitude), _ = curve_fit(power_law, x, y, p0=(-slope, intercept))
        floor = 0.0
    else:
        start = 0.5 * losses.min()
        slope, intercept = np.polyfit(x, np.log(losses - start), 1)
        bounds = ([0.0, -np.inf, 0.0], [np.inf, np.inf, losses.min()])
        p0 = (max(-slope, 1e-3), intercept, start)
        (alpha, amplitude, floor), _ = curve_fit(saturating_law, x, y, p0=p0, bounds=bounds, maxfev=20_000)
    fit = {"form": form, "alpha": float(alpha), "l_inf": float(floor), "n_c": None}
    fit.update(reference_n=reference, amplitude=float(amplitude))
    if alpha and abs(amplitude / alpha) < 700:  # N_c past float range: a flat line
        fit["n_c"] = reference * math.exp(amplitude / alpha)
    fit["rms_log_residual"] = float(np.sqrt(np.mean((np.log(fit_loss(fit, parameters)) - y) ** 2)))
    return fit


def fit_loss(fit: dict, parameters):
    """The fitted loss at `parameters` (an array or a number)."""
    x = np.log(np.asarray(parameters, dtype=float) / fit["reference_n"])
    return np.exp(fit["amplitude"] - fit["alpha"] * x) + fit["l_inf"]


def t_interval(values: list[float]) -> dict:
    """Mean, sample standard deviation and the two-sided 95% Student t interval of the mean, from 2 values on."""
    return {**spread(values, min_for_interval=2), "seeds": len(values)}


def grouped(points: list[dict], key: str) -> dict:
    groups = {}
    for point in points:
        groups.setdefault(point[key], []).append(point)
    return groups


def parameters_of(point: dict) -> int:
    return point["parameters"]["non_embedding"]


def bits(point: dict) -> float:
    """A point's test bits per byte; NaN for a diverged one (results.json holds it as null)."""
    value = point["test_bits_per_byte"]
    return math.nan if value is None else value


def mean_bits(points: list[dict]) -> float:
    return statistics.fmean(bits(point) for point in points)


def line_fits(points: list[dict], form: str) -> dict:
    """A line's fit per seed (alpha's interval is over these) and the fit of its mean over seeds at each size."""
    per_seed = {}
    for seed, group in sorted(grouped(points, "seed").items()):
        fit = fit_power_law([parameters_of(p) for p in group], [bits(p) for p in group], form)
        if fit is not None:
            per_seed[str(seed)] = fit
    sizes = grouped(points, "size").values()
    mean_fit = fit_power_law([parameters_of(group[0]) for group in sizes], [mean_bits(group) for group in sizes], form)
    alphas = [fit["alpha"] for fit in per_seed.values()]
    return {"per_seed": per_seed, "mean_fit": mean_fit, "alpha": t_interval(alphas) if alphas else None}


def crossings(fit_a: dict, fit_b: dict, low: float, high: float) -> list[float]:
    """The sizes in [low, high] where the two fitted curves meet."""

    def difference(log_n):
        return fit_loss(fit_a, np.exp(log_n)) - fit_loss(fit_b, np.exp(log_n))

    grid = np.linspace(math.log(low), math.log(high), 1024)
    values = difference(grid)
    changes = np.flatnonzero(np.sign(values[:-1]) * np.sign(values[1:]) < 0)
    return [float(np.exp(brentq(difference, grid[i], grid[i + 1]))) for i in changes]


def pair_crossing(a: str, b: str, fits: dict, ranges: dict) -> dict | None:
    """Where the fitted losses of lines a and b meet inside the sizes both measured, with a 95% interval of that size
    over seeds when every seed's fits meet once; or which line is lower throughout."""
    mean_a, mean_b = fits[a]["mean_fit"], fits[b]["mean_fit"]
    low, high = max(ranges[a][0], ranges[b][0]), min(ranges[a][1], ranges[b][1])
    if mean_a is None or mean_b is None or not low < high:
        return None
    found = crossings(mean_a, mean_b, low, high)
    seeds = fits[a]["per_seed"].keys() & fits[b]["per_seed"].keys()
    per_seed = {seed: crossings(fits[a]["per_seed"][seed], fits[b]["per_seed"][seed], low, high) for seed in seeds}
    lower = a if fit_loss(mean_a, high) < fit_loss(mean_b, high) else b  # at the largest size both measured
    entry = {"lines": [a, b], "range": [low, high], "crossings": found, "per_seed": per_seed, "ci95": None}
    if not found:
        entry.update(
            lower_throughout=lower,
            text=f"{a} / {b}: no crossing in the measured range ({low:,} to {high:,}); {lower} is lower",
        )
        return entry
    entry.update(lower_above=lower, text=f"{a} / {b}: {lower} is lower above N = {format_value(found[-1])}")
    if len(found) == 1 and len(per_seed) >= 2 and all(len(values) == 1 for values in per_seed.values()):
        spread = t_interval([math.log(values[0]) for values in per_seed.values()])
        entry["ci95"] = [math.exp(bound) for bound in spread["ci95"]]
        entry["text"] += (
            f" (95% interval over seeds {format_value(entry['ci95'][0])} to {format_value(entry['ci95'][1])})"
        )
    return entry


def summarize(results: dict) -> None:
    """Fits per line and crossings per pair of lines, from the points so far."""
    measured = {name: entry["points"] for name, entry in results["models"].items() if entry["points"]}
    fits = {name: line_fits(points, results["settings"]["fit"]) for name, points in measured.items()}
    ranges = {
        name: (min(map(parameters_of, points)), max(map(parameters_of, points))) for name, points in measured.items()
    }
    pairs = (pair_crossing(a, b, fits, ranges) for a, b in itertools.combinations(fits, 2))
    results.update(fits=fits, crossings=[pair for pair in pairs if pair is not None])
