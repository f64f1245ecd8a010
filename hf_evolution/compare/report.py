"""What a comparison run writes: results.json (every figure with its unit), results.csv, results.md and the PNG plots,
rewritten from what has finished each time a model finishes."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path

from ..families import FAMILIES, family_color, missing_head
from ..reporting import format_value, markdown_table, new_figure, save_figure
from ..runs import write_json, write_text
from .settings import RunSettings
from .statistics import MIN_SEEDS_FOR_INTERVAL, RANKED_FIGURES, is_finite, is_quality, ranking, summarize

OUTPUTS = ("results.json", "results.csv", "results_per_seed.csv", "results.md")
PLOTS = ("validation_loss.png", "quality_vs_parameters.png", "throughput.png")  # each prefixed by the task
# results.json follows this JSON Schema, shipped with the package; the version changes with the layout.
SCHEMA = Path(__file__).with_name("results.schema.json")
SCHEMA_VERSION = 3


def results_schema() -> dict:
    """The JSON Schema of results.json, its models those of the family registry (and a pretrained BERT)."""
    schema = json.loads(SCHEMA.read_text())
    schema["$defs"]["model"]["enum"] = [*FAMILIES, "bert-pretrained"]
    return schema


UNITS = {
    "params_total": "parameters",
    "params_non_embedding": "parameters",
    "loss": "nats per token",
    "perplexity": "per token",
    "bits_per_byte": "bits per UTF-8 byte",
    "accuracy": "fraction",
    "f1_macro": "fraction",
    "train_tokens": "tokens (padding excluded)",
    "train_seconds": "seconds (training steps only, evaluation excluded)",
    "train_tokens_per_second": "tokens/s",
    "generation_tokens_per_second": "tokens/s (greedy, batch 1)",
    "peak_memory_mb": "MiB (CUDA allocator peak on GPU, process resident peak on CPU)",
    "wall_seconds": "seconds (training, evaluation and measurements)",
    "seed": "model initialisation and data order; the tokenizer and the splits are the same for every seed",
    "summary": "per model over its seeds: the mean of every figure; quality figures (val_, test_) also with the "
    "sample standard deviation (_std, null for one seed) and the 95% t interval of the mean (_ci95, from 3 seeds, "
    "clipped to the values the figure can take)",
    "training": "stateful: contiguous streams, state carried between batches; blocks: shuffled blocks from a zero "
    "state; documents: one document per row",
    "optimizer": "adamw (weight decay 0.01) or sgd (plain, no weight decay); 5% warmup, then linear decay",
    "perplexity and bits_per_byte (val_, test_)": "blocks of block_size tokens, each read from nothing",
    "stream_perplexity and stream_bits_per_byte": "the whole split read as one stream, as stream_protocol says",
    "train_unigram_loss": "nats per token: the entropy of the training split's token frequencies, the loss of a "
    "model that reads no context; a language model near it has learned nothing more (the unigram plateau)",
    "diverged": "the model's loss became NaN or infinite, or its perplexity passed float's range: figures that are "
    "not numbers are null, and its model's summary has no quality figure and no rank (diverged_seeds)",
}


LM_COLUMNS = {
    "model": "model",
    "shape": "layers x width",
    "params_total": "params",
    "params_non_embedding": "non-emb. params",
    "training": "training",
    "optimizer": "optimiser",
    "learning_rate": "lr",
    "val_loss": "val loss",
    "val_stream_perplexity": "val ppl (stream)",
    "test_perplexity": "test ppl (blocks)",
    "test_stream_perplexity": "test ppl (stream)",
    "test_bits_per_byte": "test bits/byte (blocks)",
    "test_stream_bits_per_byte": "test bits/byte (stream)",
    "train_tokens": "train tokens",
    "train_tokens_per_second": "train tok/s",
    "generation_tokens_per_second": "gen tok/s",
    "peak_memory_mb": "peak MiB",
    "wall_seconds": "wall s",
}
CLASSIFY_COLUMNS = {
    "model": "model",
    "shape": "layers x width",
    "params_total": "params",
    "params_non_embedding": "non-emb. params",
    "pooling": "pooling",
    "learning_rate": "lr",
    "val_loss": "val loss",
    "val_accuracy": "val acc",
    "test_accuracy": "test acc",
    "test_f1_macro": "test macro F1",
    "train_tokens": "train tokens",
    "train_tokens_per_second": "train tok/s",
    "peak_memory_mb": "peak MiB",
    "wall_seconds": "wall s",
}


def write_outputs(run_dir: Path, results: dict) -> None:
    """results.json, the CSV files, results.md and the plots, all rewritten from what has finished so far."""
    results["summary"] = summarize(results["runs"])
    write_json(run_dir / "results.json", results)
    write_text(run_dir / "results.csv", csv_text([flat_summary(row) for row in results["summary"]]))
    write_text(run_dir / "results_per_seed.csv", csv_text(results["runs"]))
    write_text(run_dir / "results.md", results_markdown(results))
    for task in results["settings"]["tasks"]:
        runs = [row for row in results["runs"] if row["task"] == task]
        if runs:
            plot_task(run_dir, task, runs, [row for row in results["summary"] if row["task"] == task])


def flat_summary(row: dict) -> dict:
    """A summary row for CSV: each 95% interval as two columns."""
    flat = {}
    for key, value in row.items():
        if key.endswith("_ci95"):
            flat[f"{key}_low"], flat[f"{key}_high"] = value or (None, None)
        else:
            flat[key] = ";".join(map(str, value)) if isinstance(value, list) else value
    return flat


def csv_text(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row if key != "curve"))
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=columns)
    writer.writeheader()
    writer.writerows({key: row.get(key) for key in columns} for row in rows)
    return table.getvalue()


def with_spread(row: dict) -> dict:
    """A summary row for display: each quality figure as `mean ± std` once there are two seeds, and `diverged`
    where a diverged model has none."""
    shown = dict(row)
    if is_finite(row.get("learning_rate")):
        shown["learning_rate"] = f"{row['learning_rate']:g}"
    for key, value in row.items():
        if row.get(f"{key}_std") is not None:
            shown[key] = f"{format_value(value)} ± {format_value(row[f'{key}_std'])}"
        elif value is None and is_quality(key) and row.get("diverged_seeds"):
            shown[key] = "diverged"
    return shown


def diverged_lines(rows: list[dict], seeds: list[int]) -> list[str]:
    """Which models diverged, with which seeds: what the empty figures and the missing ranks mean."""
    lines = []
    for row in rows:
        diverged = row.get("diverged_seeds")
        if not diverged:
            continue
        which = (
            ""
            if len(seeds) == 1
            else f" with {len(diverged)} of its {row['n_seeds']} seeds ({', '.join(map(str, diverged))})"
        )
        rate = f" at lr {row['learning_rate']:g}" if is_finite(row.get("learning_rate")) else ""
        lines.append(
            f"- {row['model']} diverged{which}{rate}: its loss became NaN or too large for a float, so it has no "
            "mean quality figure and no rank; results_per_seed.csv holds each seed's figures."
        )
    return ["Diverged:", "", *lines, ""] if lines else []


def results_markdown(results: dict) -> str:
    settings = RunSettings.from_json(results["settings"])
    preset = settings.preset
    machine = results["environment"]["machine"]
    seeds = settings.seeds
    lines = [
        "# hf-evolution compare",
        "",
        f"Data: {settings.dataset}; tokenizer: {settings.tokenizer} (shared); size: {preset.size} "
        f"(non-embedding parameters matched); device: {machine['device']} "
        f"({machine['cpu_count']} CPUs, {machine['torch_threads']} torch threads).",
        "Budget per model: "
        + ", ".join(f"{getattr(preset, f'{task}_tokens'):,} training tokens ({task})" for task in settings.tasks)
        + (f", at most {settings.budget_seconds} s" if settings.budget_seconds else "")
        + ".",
        seeds_sentence(seeds),
        "",
    ]
    summary = results["summary"]
    lm_rows = [row for row in summary if row["task"] == "lm"]
    if lm_rows:
        protocols = sorted(
            {f"{row['model']}: {row['stream_protocol']}" for row in lm_rows if "stream_protocol" in row}
        )
        lines += [
            f"Language modelling is scored two ways: blocks of {preset.block_size} tokens each read from nothing "
            "(the common protocol), and the whole split read as one stream, each family its own way"
            + f" ({'; '.join(protocols)})"
            + ". Perplexities compare only within one protocol and one tokenizer.",
            "",
        ]
    for task, columns, title in (
        ("lm", LM_COLUMNS, "Language modelling"),
        ("classify", CLASSIFY_COLUMNS, "Topic classification"),
    ):
        task_rows = [row for row in summary if row["task"] == task]
        if task not in settings.tasks:
            continue
        lines += [f"## {title}", ""]
        if not task_rows:
            lines += ["(no model finished yet)", ""]
            continue
        if len(seeds) > 1:  # a run in progress may hold fewer seeds of some models
            columns = {"model": columns["model"], "n_seeds": "seeds", **columns}
        # A family without a head for the task still gets its row, saying why it did not run.
        missing = [
            {"model": f"{family}: not run, {missing_head(family, task)}"}
            for family in settings.requested_models
            if missing_head(family, task)
        ]
        missing += [
            {"model": f"{entry['model']}: not run, every learning rate of its sweep diverged"}
            for entry in results["lr_sweep"]
            if entry["task"] == task and all_diverged(entry)
        ]
        lines += [markdown_table([with_spread(row) for row in task_rows] + missing, columns), ""]
        lines += diverged_lines(task_rows, seeds)
        if len(seeds) >= MIN_SEEDS_FOR_INTERVAL:
            lines += interval_lines(task_rows, columns)
        for key, lower_is_better in RANKED_FIGURES[task].items():
            lines += ranking_lines(task_rows, key, columns.get(key, key), lower_is_better)
        sweeps = [entry for entry in results["lr_sweep"] if entry["task"] == task]
        if sweeps:
            lines += sweep_lines(sweeps, seeds[0])
    if results["notes"]:
        lines += ["Notes:", *[f"- {note}" for note in results["notes"]], ""]
    return "\n".join(lines)


def seeds_sentence(seeds: list[int]) -> str:
    if len(seeds) == 1:
        return (
            f"One seed ({seeds[0]}): the spread between seeds is not measured, so no difference below is tested "
            "(--seeds 3 measures it)."
        )
    sentence = (
        f"Seeds {', '.join(map(str, seeds))}: every figure is the mean over the seeds; quality figures show "
        "± the sample standard deviation."
    )
    if len(seeds) >= MIN_SEEDS_FOR_INTERVAL:
        sentence += (
            " Each model's rank is the range its 95% interval (t distribution, clipped to the figure's possible "
            "values) allows against the others': a range such as 1–2 is a tie, a difference the seeds do not "
            "resolve."
        )
    return sentence


def interval_lines(rows: list[dict], columns: dict[str, str]) -> list[str]:
    """The 95% interval of every quality figure of the table."""
    quality = {key: header for key, header in columns.items() if is_quality(key)}
    shown = [
        {
            "model": row["model"],
            **{key: " to ".join(map(format_value, row[f"{key}_ci95"])) for key in quality if row.get(f"{key}_ci95")},
        }
        for row in rows
    ]
    return [
        "95% intervals of the means over the seeds:",
        "",
        markdown_table(shown, {"model": "model", **quality}),
        "",
    ]


def ranking_lines(rows: list[dict], key: str, header: str, lower_is_better: bool) -> list[str]:
    """The models in order of `key`, with ranks the 95% intervals support, or the order alone when they cannot."""
    if len(rows) < 2:
        return []
    entries = ranking(rows, key, lower_is_better)
    direction = "lower" if lower_is_better else "higher"
    if entries[0]["best_rank"] is None:
        names = [entry["model"] for entry in entries if not entry["diverged"]]
        diverged = [entry["model"] for entry in entries if entry["diverged"]]
        return [
            f"Order by {header}, best first: {', '.join(names) or 'none'} (not tested: an interval needs "
            f"{MIN_SEEDS_FOR_INTERVAL} seeds of every model)."
            + (f" Diverged: {', '.join(diverged)}." if diverged else ""),
            "",
        ]
    table = [
        {
            "rank": rank_text(entry),
            "model": entry["model"],
            "mean": "diverged" if entry["diverged"] else entry["mean"],
            "interval": "-" if entry["diverged"] else " to ".join(map(format_value, entry["ci95"])),
            "better_than": ", ".join(entry["better_than"]) or "-",
        }
        for entry in entries
    ]
    return [
        f"Ranks by {header}, {direction} is better:",
        "",
        markdown_table(
            table,
            {
                "rank": "rank",
                "model": "model",
                "mean": header,
                "interval": "95% interval",
                "better_than": "resolved better than",
            },
        ),
        "",
    ]


def rank_text(entry: dict) -> str:
    """A rank, or the range of ranks the intervals leave open (a tie); none for a diverged model."""
    if entry["diverged"]:
        return "-"
    if entry["tied"]:
        return f"{entry['best_rank']}–{entry['worst_rank']}"
    return str(entry["best_rank"])


def sweep_lines(sweeps: list[dict], seed: int) -> list[str]:
    metric = sweeps[0]["metric"]
    grid = sorted({rate for entry in sweeps for rate in entry["grid"]})
    rows = []
    for entry in sweeps:
        tried = {row["learning_rate"]: sweep_figure(row, metric) for row in entry["trials"]}
        row = {"model": entry["model"], "chosen": "none: all diverged" if all_diverged(entry) else entry["chosen"]}
        row.update({f"lr {rate:g}": tried.get(rate) for rate in grid})
        rows.append(row)
    columns = {"model": "model", **{f"lr {rate:g}": f"lr {rate:g}" for rate in grid}, "chosen": "chosen lr"}
    return [
        f"Learning-rate sweep (--lr-sweep), seed {seed}, {metric} of each trial:",
        "",
        markdown_table(rows, columns),
        "",
    ]


def sweep_figure(trial: dict, metric: str) -> str:
    if trial.get("diverged") or not is_finite(trial.get(metric)):
        return "diverged"
    return f"{trial[metric]:.4g}"


def all_diverged(sweep: dict) -> bool:
    """Whether every learning rate of a finished sweep diverged, so that the model has no run."""
    trials = sweep["trials"]
    return len(trials) == len(sweep["grid"]) and all(
        sweep_figure(row, sweep["metric"]) == "diverged" for row in trials
    )


def mean_curve(rows: list[dict]) -> dict[str, list[float]]:
    """The validation curve over seeds, point by point (seeds evaluate at the same steps): the mean tokens, seconds
    and loss, and the lowest and highest loss. A loss that is not a number (a diverged model) is NaN, which
    matplotlib leaves out: the mean line stops where a seed diverged, the band shows the others."""
    length = min(len(row["curve"]) for row in rows)
    points = [[row["curve"][index] for row in rows] for index in range(length)]
    losses = [[point["val_loss"] if is_finite(point["val_loss"]) else math.nan for point in seeds] for seeds in points]
    return {
        "tokens": [statistics.fmean(point["tokens"] for point in seeds) for seeds in points],
        "seconds": [statistics.fmean(point["seconds"] for point in seeds) for seeds in points],
        "loss": [statistics.fmean(values) for values in losses],
        "low": [min(filter(math.isfinite, values), default=math.nan) for values in losses],
        "high": [max(filter(math.isfinite, values), default=math.nan) for values in losses],
    }


def plot_task(run_dir: Path, task: str, runs: list[dict], summary: list[dict]) -> None:
    """Validation loss against training tokens and against training time (the mean over seeds, with a band from the
    lowest to the highest seed); final quality against parameters, with error bars of one standard deviation over
    seeds; training (and generation) throughput, the mean over seeds."""
    figure, (by_tokens, by_time) = new_figure(12, 4.5, ncols=2)
    for row in summary:
        color = family_color(row["model"].split("-")[0])
        curve = mean_curve([run for run in runs if run["model"] == row["model"]])
        style = "--" if row["model"].endswith("pretrained") else "-"
        for axes, x in ((by_tokens, curve["tokens"]), (by_time, curve["seconds"])):
            axes.plot(x, curve["loss"], style, marker="o", color=color, label=row["model"])
            if row["n_seeds"] > 1:
                axes.fill_between(x, curve["low"], curve["high"], color=color, alpha=0.2, linewidth=0)
    unigram = runs[0].get("train_unigram_loss") if task == "lm" else None
    if is_finite(unigram):  # the plateau a language model that has learned nothing but frequencies sits on
        for axes in (by_tokens, by_time):
            axes.axhline(unigram, color="gray", linestyle=":", label="unigram (training split)")
    by_tokens.set_xlabel("training tokens")
    by_time.set_xlabel("training time (s)")
    for axes in (by_tokens, by_time):
        axes.set_ylabel("validation loss (nats/token)" if task == "lm" else "validation loss")
        axes.grid(alpha=0.3)
        axes.legend()
    seeds = max(row["n_seeds"] for row in summary)
    band = f", mean of {seeds} seeds (band: lowest to highest)" if seeds > 1 else ""
    figure.suptitle(f"{'Language modelling' if task == 'lm' else 'Topic classification'}: validation loss{band}")
    save_figure(figure, run_dir / f"{task}_{PLOTS[0]}")

    figure, axes = new_figure()
    quality = "test_perplexity" if task == "lm" else "test_accuracy"
    for row in summary:
        if not is_finite(row[quality]):  # diverged: named in the title instead
            continue
        color = family_color(row["model"].split("-")[0])
        x, y = row["params_non_embedding"], row[quality]
        axes.errorbar(x, y, yerr=row[f"{quality}_std"], fmt="o", markersize=9, capsize=4, color=color)
        axes.annotate(row["model"], (x, y), textcoords="offset points", xytext=(6, 4))
    axes.set_xscale("log")
    axes.set_xlabel("non-embedding parameters")
    axes.set_ylabel("test perplexity (lower is better)" if task == "lm" else "test accuracy (higher is better)")
    diverged = [row["model"] for row in summary if not is_finite(row[quality])]
    axes.set_title(
        "Quality against parameters" + (f" (diverged, not shown: {', '.join(diverged)})" if diverged else "")
    )
    axes.grid(alpha=0.3)
    save_figure(figure, run_dir / f"{task}_{PLOTS[1]}")

    figure, axes = new_figure()
    names = [row["model"] for row in summary]
    colors = [family_color(name.split("-")[0]) for name in names]
    positions = range(len(summary))
    if task == "lm":
        width = 0.4
        axes.bar(
            [p - width / 2 for p in positions],
            [row["train_tokens_per_second"] for row in summary],
            width,
            color=colors,
            label="training",
        )
        axes.bar(
            [p + width / 2 for p in positions],
            [row["generation_tokens_per_second"] or math.nan for row in summary],
            width,
            color=colors,
            alpha=0.45,
            hatch="//",
            label="generation (batch 1)",
        )
        axes.legend()
    else:
        axes.bar(list(positions), [row["train_tokens_per_second"] for row in summary], color=colors)
    axes.set_xticks(list(positions), names)
    axes.set_yscale("log")
    axes.set_ylabel("tokens per second")
    axes.set_title("Throughput")
    axes.grid(alpha=0.3, axis="y")
    save_figure(figure, run_dir / f"{task}_{PLOTS[2]}")
