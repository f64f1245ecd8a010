"""The model card (README.md) that the scripts and compare write beside every model: YAML metadata the Hub reads,
the measured results, how to load the model, how it was trained, and its limits."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..families import describe_model, parameter_counts
from ..modeling_recurrent import RecurrentPreTrainedModel
from ..runs import environment


def is_hub_id(name: str | None) -> bool:
    """A Hub repo id (user/name or name), as opposed to a local folder; only those belong in card metadata."""
    return bool(name) and not Path(name).exists() and name.count("/") <= 1 and " " not in name


METRIC_LABELS = {
    "loss": "loss (nats/token)",
    "perplexity": "perplexity",
    "bits_per_byte": "bits per byte",
    "stream_perplexity": "perplexity, whole stream",
    "stream_bits_per_byte": "bits per byte, whole stream",
    "accuracy": "accuracy",
    "f1_macro": "macro F1",
    "f1_micro": "micro F1",
}
# How each figure appears in `model-index`, the metadata the Hub shows beside the model: the metric's type and, where
# one type is measured two ways, its config ("whole stream": read as one stream, with the state carried for
# recurrent models and a sliding window for transformers, instead of in separate blocks).
HUB_METRICS = {
    "loss": ("loss", None),
    "perplexity": ("perplexity", None),
    "bits_per_byte": ("bits_per_byte", None),
    "stream_perplexity": ("perplexity", "whole stream"),
    "stream_bits_per_byte": ("bits_per_byte", "whole stream"),
    "accuracy": ("accuracy", None),
    "f1_macro": ("f1", "macro"),
    "f1_micro": ("f1", "micro"),
}
TASK_NAMES = {"text-generation": "Language modelling", "text-classification": "Text classification"}


def model_index_results(task: str, dataset: str, results: dict) -> list[EvalResult]:
    """Every measured figure of `results` (`eval_*` for validation, `test_*` for test) as a model-index entry."""
    return [
        EvalResult(
            task_type=task,
            task_name=TASK_NAMES.get(task),
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split=split,
            metric_type=HUB_METRICS[metric][0],
            metric_config=HUB_METRICS[metric][1],
            metric_name=label,
            metric_value=round(float(results[f"{prefix}_{metric}"]), 4),
        )
        for split, prefix in (("validation", "eval"), ("test", "test"))
        for metric, label in METRIC_LABELS.items()
        if results.get(f"{prefix}_{metric}") is not None
    ]


def write_model_card(folder, model, *, args, log_history, results: dict, info: dict) -> Path:
    """README.md with YAML metadata (library, tags, datasets, base model, metrics) and what a reader wants to know:
    what the model is, how well it did, how to load it, how it was trained, and its limits."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    task = info.get("task", "text-generation")
    dataset = info.get("dataset") or "custom data"
    name = Path(args.hub_model_id or args.output_dir).name
    base_model = info.get("base_model")
    family = model.config.model_type
    counts = parameter_counts(model)

    eval_results = model_index_results(task, dataset, results)
    card_data = ModelCardData(
        library_name="transformers",
        license="apache-2.0",
        tags=["hf-evolution", family, "recurrent" if isinstance(model, RecurrentPreTrainedModel) else "transformer"],
        datasets=[dataset] if is_hub_id(dataset) or dataset == "bbc-news" else None,
        base_model=base_model if is_hub_id(base_model) else None,
        pipeline_tag=task,
        model_name=name,
        eval_results=eval_results or None,
    )

    lines = [
        f"# {name}",
        "",
        f"A {describe_model(model)} for {task.replace('-', ' ')}, "
        + (f"fine-tuned from `{base_model}` " if base_model else "trained from scratch ")
        + f"on {dataset} with hf_evolution.",
        f"Parameters: {counts['total']:,} in all, {counts['non_embedding']:,} outside the embeddings.",
        "",
        "## Results",
        "",
    ]
    metric_rows = [
        f"| {label} | {format_metric(results.get(f'eval_{metric}'))} | {format_metric(results.get(f'test_{metric}'))} |"
        for metric, label in METRIC_LABELS.items()
        if f"eval_{metric}" in results or f"test_{metric}" in results
    ]
    if info.get("diverged"):
        lines += [
            "**Training diverged**: its loss stopped being a number, so the figures below that are not numbers "
            'read "diverged".',
            "",
        ]
        metric_rows = [row.replace("n/a", "diverged") for row in metric_rows]
    if metric_rows:
        lines += ["| metric | validation | test |", "|---|---|---|", *metric_rows, ""]
    else:
        lines += ["No evaluation has run yet (training in progress).", ""]
    if "sample" in results:
        lines += ["A sample (top-k 50 sampling):", "", "> " + results["sample"].replace("\n", " "), ""]

    lines += ["## How to use", "", "```python"]
    if task == "text-generation":
        lines += [
            "from transformers import pipeline",
            "",
            f'generator = pipeline("text-generation", model="{args.hub_model_id or name}", trust_remote_code=True)',
            'print(generator("The", max_new_tokens=30)[0]["generated_text"])',
        ]
    else:
        lines += [
            "from transformers import pipeline",
            "",
            f'classifier = pipeline("{task}", model="{args.hub_model_id or name}", trust_remote_code=True)',
            'print(classifier("Shares rose after the results."))',
        ]
    lines += ["```", ""]
    if isinstance(model, RecurrentPreTrainedModel):
        lines += [
            "`trust_remote_code=True` runs the model code shipped in this repository, so hf_evolution need not be "
            "installed; where it is, `import hf_evolution` registers the classes and the flag can be left out.",
            "",
        ]

    batch = args.per_device_train_batch_size * max(1, args.world_size) * args.gradient_accumulation_steps
    train_entries = [entry for entry in log_history if "loss" in entry]
    final = next((entry for entry in reversed(log_history) if "train_runtime" in entry), {})
    lines += [
        "## Training",
        "",
        "| setting | value |",
        "|---|---|",
        f"| tokenizer | {info.get('tokenizer', 'see tokenizer files')} |",
        f"| learning rate | {args.learning_rate} ({getattr(args.lr_scheduler_type, 'value', args.lr_scheduler_type)} "
        f"schedule, warmup {args.warmup_steps} steps) |",
        f"| batch size | {batch} ({args.per_device_train_batch_size} per device x {max(1, args.world_size)} "
        f"devices x {args.gradient_accumulation_steps} accumulation) |",
        f"| steps | {final.get('step', args.max_steps if args.max_steps > 0 else 'see log')} |",
        f"| gradient clipping | {args.max_grad_norm} |",
        f"| seed | {args.seed} |",
    ]
    if "train_runtime" in final:
        lines.append(f"| training time | {final['train_runtime']:.0f} s |")
    if info.get("command"):
        lines += ["", "Command:", "", "```bash", info["command"], "```"]
    if train_entries:
        lines += ["", "| step | training loss | validation loss |", "|---|---|---|"]
        eval_by_step = {entry["step"]: entry["eval_loss"] for entry in log_history if "eval_loss" in entry}
        for entry in train_entries[-10:]:
            lines.append(
                f"| {entry['step']} | {entry['loss']:.4f} | {format_metric(eval_by_step.get(entry['step']))} |"
            )
    lines += [
        "",
        "## Limitations",
        "",
        f"A small model trained on {dataset} only: it reflects that text's topics, period and style, and is meant for "
        "studying how model families compare, not for producing facts or for deployment.",
        "",
        "## Framework versions",
        "",
        *[f"- {package}: {version}" for package, version in environment()["versions"].items()],
        "",
    ]
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines))
    path = folder / "README.md"
    card.save(path)
    return path


def format_metric(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"
