"""What a comparison run writes: results.json (every figure with its unit), results.csv, results.md and the PNG plots,
rewritten from what has finished each time a model finishes."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..reporting import FAMILY_COLORS, markdown_table, new_figure, save_figure
from ..runs import write_json, write_text

OUTPUTS = ("results.json", "results.csv", "results.md")
PLOTS = ("validation_loss.png", "quality_vs_parameters.png", "throughput.png")  # each prefixed by the task

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
    "training": "stateful: contiguous streams, state carried between batches; blocks: shuffled blocks from a zero "
    "state; documents: one document per row",
    "optimizer": "adamw (weight decay 0.01) or sgd (plain, no weight decay); 5% warmup, then linear decay",
    "perplexity and bits_per_byte (val_, test_)": "blocks of block_size tokens, each read from nothing",
    "stream_perplexity and stream_bits_per_byte": "the whole split read as one stream, as stream_protocol says",
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
    """results.json, results.csv, results.md and the plots, all rewritten from what has finished so far."""
    write_json(run_dir / "results.json", results)
    rows = results["runs"]
    columns = sorted({key for row in rows for key in row if key != "curve"}, key=str)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=columns)
    writer.writeheader()
    writer.writerows({key: row.get(key) for key in columns} for row in rows)
    write_text(run_dir / "results.csv", table.getvalue())
    write_text(run_dir / "results.md", results_markdown(results))
    for task in results["settings"]["tasks"]:
        task_rows = [row for row in rows if row["task"] == task]
        if task_rows:
            plot_task(run_dir, task, task_rows)


def results_markdown(results: dict) -> str:
    settings, preset = results["settings"], results["settings"]["preset"]
    machine = results["environment"]["machine"]
    lines = [
        "# hf-evolution compare",
        "",
        f"Data: {settings['dataset']}; tokenizer: {settings['tokenizer']} (shared); size: {preset['size']} "
        f"(non-embedding parameters matched); seed {settings['seed']}; device: {machine['device']} "
        f"({machine['cpu_count']} CPUs, {machine['torch_threads']} torch threads).",
        "Budget per model: "
        + ", ".join(f"{preset[f'{task}_tokens']:,} training tokens ({task})" for task in settings["tasks"])
        + (f", at most {settings['budget_seconds']} s" if settings["budget_seconds"] else "")
        + ".",
        "",
    ]
    lm_rows = [row for row in results["runs"] if row["task"] == "lm"]
    if lm_rows:
        protocols = sorted(
            {f"{row['model']}: {row['stream_protocol']}" for row in lm_rows if "stream_protocol" in row}
        )
        lines += [
            f"Language modelling is scored two ways: blocks of {preset['block_size']} tokens each read from nothing "
            "(the common protocol), and the whole split read as one stream, each family its own way"
            + f" ({'; '.join(protocols)})"
            + ". Perplexities compare only within one protocol and one tokenizer.",
            "",
        ]
    for task, columns, title in (
        ("lm", LM_COLUMNS, "Language modelling"),
        ("classify", CLASSIFY_COLUMNS, "Topic classification"),
    ):
        task_rows = [row for row in results["runs"] if row["task"] == task]
        if task in settings["tasks"]:
            lines += [
                f"## {title}",
                "",
                markdown_table(task_rows, columns) if task_rows else "(no model finished yet)",
                "",
            ]
    if results["notes"]:
        lines += ["Notes:", *[f"- {note}" for note in results["notes"]], ""]
    return "\n".join(lines)


def plot_task(run_dir: Path, task: str, rows: list[dict]) -> None:
    """Validation loss against training tokens and against training time; final quality against parameters;
    training (and generation) throughput."""
    figure, (by_tokens, by_time) = new_figure(12, 4.5, ncols=2)
    for row in rows:
        color = FAMILY_COLORS.get(row["model"].split("-")[0], "gray")
        tokens = [point["tokens"] for point in row["curve"]]
        seconds = [point["seconds"] for point in row["curve"]]
        losses = [point["val_loss"] for point in row["curve"]]
        style = "--" if row["model"].endswith("pretrained") else "-"
        by_tokens.plot(tokens, losses, style, marker="o", color=color, label=row["model"])
        by_time.plot(seconds, losses, style, marker="o", color=color, label=row["model"])
    by_tokens.set_xlabel("training tokens")
    by_time.set_xlabel("training time (s)")
    for axes in (by_tokens, by_time):
        axes.set_ylabel("validation loss (nats/token)" if task == "lm" else "validation loss")
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(f"{'Language modelling' if task == 'lm' else 'Topic classification'}: validation loss")
    save_figure(figure, run_dir / f"{task}_{PLOTS[0]}")

    figure, axes = new_figure()
    quality = "test_perplexity" if task == "lm" else "test_accuracy"
    for row in rows:
        color = FAMILY_COLORS.get(row["model"].split("-")[0], "gray")
        axes.scatter(row["params_non_embedding"], row[quality], s=80, color=color, label=row["model"])
        axes.annotate(
            row["model"], (row["params_non_embedding"], row[quality]), textcoords="offset points", xytext=(6, 4)
        )
    axes.set_xscale("log")
    axes.set_xlabel("non-embedding parameters")
    axes.set_ylabel("test perplexity (lower is better)" if task == "lm" else "test accuracy (higher is better)")
    axes.set_title("Quality against parameters")
    axes.grid(alpha=0.3)
    save_figure(figure, run_dir / f"{task}_{PLOTS[1]}")

    figure, axes = new_figure()
    names = [row["model"] for row in rows]
    colors = [FAMILY_COLORS.get(name.split("-")[0], "gray") for name in names]
    positions = range(len(rows))
    if task == "lm":
        width = 0.4
        axes.bar(
            [p - width / 2 for p in positions],
            [row["train_tokens_per_second"] for row in rows],
            width,
            color=colors,
            label="training",
        )
        axes.bar(
            [p + width / 2 for p in positions],
            [row["generation_tokens_per_second"] for row in rows],
            width,
            color=colors,
            alpha=0.45,
            hatch="//",
            label="generation (batch 1)",
        )
        axes.legend()
    else:
        axes.bar(list(positions), [row["train_tokens_per_second"] for row in rows], color=colors)
    axes.set_xticks(list(positions), names)
    axes.set_yscale("log")
    axes.set_ylabel("tokens per second")
    axes.set_title("Throughput")
    axes.grid(alpha=0.3, axis="y")
    save_figure(figure, run_dir / f"{task}_{PLOTS[2]}")
