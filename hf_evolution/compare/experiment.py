"""The comparison itself: every model of the plan trained with `EvolutionTrainer` on the same data, tokenizer and
budget, measured, saved with its model card, and written to the results the moment it finishes.

A run survives a kill at any moment: results.json is rewritten atomically after every model, each model resumes from
its last complete checkpoint (with its validation curve and loss so far), and finished models are never redone."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import DatasetDict
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase, TrainerCallback, default_data_collator

from ..data import (
    batchify_for_lm,
    corpus_stats,
    load_corpus,
    pack_for_lm,
    token_stream,
    tokenize_for_classification,
    unigram_loss,
)
from ..evaluation import stream_loss
from ..families import (
    FAMILIES,
    RECURRENT_FAMILIES,
    TASKS,
    build_model,
    label_fields,
    missing_head,
    parameter_counts,
    shape,
)
from ..metrics import classification_compute_metrics, lm_metrics
from ..runs import (
    PeakMemory,
    RunFolder,
    best_time,
    environment,
    finite_or_null,
    pick_device,
    seed_everything,
    shared_tokenizer,
)
from ..tokenization import load_tokenizer
from ..training import EvolutionTrainer, EvolutionTrainingArguments, last_complete_checkpoint
from .report import SCHEMA_VERSION, UNITS, write_outputs
from .settings import SWEEP_METRICS, Preset, RunSettings
from .statistics import is_finite, is_quality


@dataclass
class Comparison:
    """What every training of a run shares: its folder and settings, the corpus, the shared tokenizer, the device,
    and the data each tokenizer prepares once."""

    folder: RunFolder
    settings: RunSettings
    corpus: DatasetDict
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    data_cache: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Trial:
    """One training: a model of a task, with one seed and learning rate, saved under models/`name`."""

    task: str
    family: str
    seed: int
    learning_rate: float
    name: str


def run_comparison(folder: RunFolder, settings: RunSettings, results: dict) -> int:
    """Train and measure every (task, model) of the plan that results.json does not hold yet."""
    run_dir = folder.path
    seed_everything(settings.seed)
    corpus = load_corpus(
        settings.dataset,
        dataset_config=settings.dataset_config,
        text_column=settings.text_column,
        label_column=settings.label_column,
        seed=settings.seed,
        max_documents=settings.preset.max_documents,
    )
    if "classify" in settings.tasks and "label" not in corpus["train"].column_names:
        raise ValueError(f"{settings.dataset} has no label column for --task classify; name it with --label-column.")
    tokenizer = shared_tokenizer(
        settings.tokenizer,
        corpus["train"],
        vocab_size=settings.vocab_size,
        folder=run_dir / "tokenizer",
        run_folder=folder,
    )
    if tokenizer.pad_token is None:
        raise ValueError(
            f"Tokenizer {settings.tokenizer} has no pad token; classification pads batches. Train one instead "
            "(--tokenizer bpe) or use a tokenizer with a pad token."
        )
    run = Comparison(folder, settings, corpus, tokenizer, pick_device(settings.device))
    results["notes"] = run_notes(settings)
    plan = [(task, family) for task in settings.tasks for family in settings.models[task]]
    progress = Progress(sum(trials_of(settings, task, family) for task, family in plan))

    def train(trial: Trial, into: list, finished: bool) -> None:
        """Train and measure one model into `into` (the runs, or a sweep's trials), unless a run before did."""
        what = f"{trial.task} {trial.family} seed {trial.seed} lr {trial.learning_rate:g}"
        if finished:
            progress.skip(what)
            return
        progress.start(what)
        into.append(train_and_measure(run, trial))
        write_outputs(run_dir, results)
        folder.mark_progress()

    for task, family in plan:
        seeds = settings.seeds
        learning_rate = settings.recipe(task, family).learning_rate
        done = {row["seed"] for row in results["runs"] if (row["task"], row["model"]) == (task, family)}
        grid = sweep_grid(settings, task, family)
        if grid:
            sweep = sweep_entry(results, task, family, grid)
            for rate in grid:
                tried = any(row["learning_rate"] == rate for row in sweep["trials"])
                trial = Trial(task, family, seeds[0], rate, f"{task}-{family}-lr{rate:g}-seed{seeds[0]}")
                train(trial, into=sweep["trials"], finished=tried)
            chosen = chosen_trial(sweep["trials"], sweep["metric"])
            sweep["chosen"] = learning_rate = chosen and chosen["learning_rate"]
            if chosen is None:  # recorded, and the report says so; the other models still train
                write_outputs(run_dir, results)
                for seed in seeds[1:]:
                    progress.skip(
                        f"{task} {family} seed {seed}", "not trained: every learning rate of its sweep diverged"
                    )
                continue
            if seeds[0] not in done:
                results["runs"].append(chosen)
                write_outputs(run_dir, results)
            seeds = seeds[1:]  # the first seed's run is the sweep's chosen trial
        for seed in seeds:
            trial = Trial(task, family, seed, learning_rate, f"{task}-{family}-seed{seed}")
            train(trial, into=results["runs"], finished=seed in done)
    write_outputs(run_dir, results)
    print()
    print((run_dir / "results.md").read_text())
    print(f"Results, plots and checkpoints: {run_dir}")
    return 0


def sweep_grid(settings: RunSettings, task: str, family: str) -> list[float] | None:
    return (settings.lr_sweep or {}).get(task, {}).get(family)


def chosen_trial(trials: list[dict], metric: str) -> dict | None:
    """The sweep's trial with the lowest `metric`: a diverged trial never wins, and none does if every one diverged."""
    finished = [row for row in trials if not row.get("diverged") and is_finite(row.get(metric))]
    return min(finished, key=lambda row: row[metric], default=None)


def trials_of(settings: RunSettings, task: str, family: str) -> int:
    """How many trainings a model takes: one per seed, and a sweep's grid in place of the first seed's."""
    grid = sweep_grid(settings, task, family)
    return len(settings.seeds) + (len(grid) - 1 if grid else 0)


class Progress:
    """Numbers the trainings of a run, `[3/12]`, counting the ones an earlier run finished."""

    def __init__(self, total: int):
        self.total, self.index = total, 0

    def start(self, what: str) -> None:
        self.index += 1
        print(f"[{self.index}/{self.total}] {what}")

    def skip(self, what: str, why: str = "finished earlier, skipped") -> None:
        self.index += 1
        print(f"[{self.index}/{self.total}] {what}: {why}")


def sweep_entry(results: dict, task: str, family: str, grid: list[float]) -> dict:
    """The record of one model's learning-rate sweep in results.json, created on first use."""
    for entry in results["lr_sweep"]:
        if (entry["task"], entry["model"]) == (task, family):
            return entry
    entry = {"task": task, "model": family, "grid": grid, "metric": SWEEP_METRICS[task], "chosen": None, "trials": []}
    results["lr_sweep"].append(entry)
    return entry


def new_results(settings: RunSettings) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "settings": settings.to_json(),
        "units": UNITS,
        "environment": environment(),
        "notes": [],
        "runs": [],
        "summary": [],
        "lr_sweep": [],
    }


def run_notes(settings: RunSettings) -> list[str]:
    """What a reader of the tables must know about this run, and only what applies to it."""
    notes = []
    for task, other, other_name in (("lm", "classify", "classification"), ("classify", "lm", "language modelling")):
        if task in settings.tasks:
            where = f"it is compared on {other_name} only" if other in settings.tasks else "this run leaves it out"
            notes += [
                f"{missing_head(family, task)}, so {where}."
                for family in settings.requested_models
                if missing_head(family, task)
            ]
    if "classify" in settings.tasks:
        if set(settings.models["classify"]) & set(RECURRENT_FAMILIES):
            notes.append(POOLING_NOTES[settings.pooling])
        if settings.pretrained_bert:
            notes.append(
                f"bert-pretrained is {settings.pretrained_bert} fine-tuned with its own WordPiece tokenizer and "
                "pretraining: a reference point, outside the matched comparison."
            )
    if settings.lr_sweep:
        notes.append(
            f"--lr-sweep: each model's learning rate (the lr column) was chosen with seed {settings.seeds[0]} out "
            "of its grid, by validation stream perplexity (language models) or validation loss (classifiers); "
            "the sweep table lists every trial."
        )
    return notes


POOLING_NOTES = {
    "last": "Recurrent classifiers read each document through the state after its last token "
    "(classifier_pooling='last'), the classic encoder: what they forgot on the way is lost.",
    "mean": "Recurrent classifiers read each document through the mean of their states over its tokens "
    "(classifier_pooling='mean').",
    "max": "Recurrent classifiers read each document through the maximum of their states over its tokens, feature "
    "by feature (classifier_pooling='max').",
}


def task_data(task: str, corpus, tokenizer, preset: Preset, cache: dict) -> dict:
    """Training and evaluation sets of a task for a tokenizer, prepared once per run; for language modelling also
    each held-out split as one token stream."""
    key = (task, tokenizer.name_or_path, len(tokenizer))
    if key in cache:
        return cache[key]
    if task == "lm":
        sets = pack_for_lm(corpus, tokenizer, preset.block_size)
        streams = {split: token_stream(corpus[split], tokenizer) for split in ("validation", "test")}
        stats = corpus_stats(corpus, tokenizer)
        stats["train"]["unigram_loss"] = unigram_loss(sets["train"], len(tokenizer))
        tokens_per_sample = preset.block_size
    else:
        sets = tokenize_for_classification(corpus, tokenizer, max_length=preset.max_seq_length)
        stats = streams = None
        lengths = [len(ids) for ids in sets["train"].select(range(min(512, len(sets["train"]))))["input_ids"]]
        tokens_per_sample = sum(lengths) / len(lengths)
    curve_set = sets["validation"].shuffle(seed=0).select(range(min(preset.eval_samples, len(sets["validation"]))))
    cache[key] = {
        "sets": sets,
        "streams": streams,
        "stats": stats,
        "curve_set": curve_set,
        "tokens_per_sample": tokens_per_sample,
    }
    return cache[key]


def stateful_stream(corpus, tokenizer, preset: Preset, seed: int, cache: dict):
    """The training split as contiguous streams for stateful training, its articles in an order drawn by `seed`:
    the data order of a stateful model, as shuffling is a block-trained one's."""
    key = ("stateful", tokenizer.name_or_path, len(tokenizer), seed)
    if key not in cache:
        documents = corpus["train"].shuffle(seed=seed)
        cache[key] = batchify_for_lm(documents, tokenizer, preset.block_size, preset.batch_size)
    return cache[key]


class BudgetAndCurve(TrainerCallback):
    """Stops training when the token or time budget is spent, and records the validation curve against training
    tokens and training seconds (evaluation time excluded), ending with a point where training ends. Its state goes
    into every checkpoint, so a resumed model keeps the curve and the clock of its first part."""

    def __init__(self, budget_tokens: int, budget_seconds: float | None):
        self.budget_tokens = budget_tokens
        self.budget_seconds = budget_seconds
        self.curve: list[dict] = []
        self.eval_seconds = 0.0
        self.started = None
        self.seconds_before = 0.0
        self.training_seconds = 0.0

    def elapsed(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started - self.eval_seconds

    def checkpoint_state(self) -> dict:
        return {"curve": self.curve, "seconds": self.elapsed()}

    def load_checkpoint_state(self, state: dict) -> None:
        self.curve, self.seconds_before = state["curve"], state["seconds"]

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
        point = {
            "tokens": int(state.num_input_tokens_seen),
            "seconds": round(self.elapsed(), 3),
            "val_loss": metrics["eval_loss"],
            "step": state.global_step,
        }
        if not self.curve or self.curve[-1]["step"] != state.global_step:
            self.curve.append(point)

    def on_train_end(self, args, state, control, **kwargs):
        self.training_seconds = self.elapsed()
        self.started = None


def train_and_measure(run: Comparison, trial: Trial) -> dict:
    """Train one model with one seed and learning rate into models/`name`, and measure it: one row of results."""
    started = time.perf_counter()
    task, family, settings = trial.task, trial.family, run.settings
    tokenizer = load_tokenizer(settings.pretrained_bert) if family == "bert-pretrained" else run.tokenizer
    data = task_data(task, run.corpus, tokenizer, settings.preset, run.data_cache)
    model = comparison_model(task, family, tokenizer, run.corpus, settings, trial.seed)
    counts = parameter_counts(model)
    recipe = settings.recipe(task, family)
    trainer, tracker = comparison_trainer(run, trial, model, tokenizer, data)
    output_dir = Path(trainer.args.output_dir)
    checkpoint = last_complete_checkpoint(output_dir)
    if checkpoint is None:  # the curve starts from the untrained model
        initial = trainer.evaluate()
        tracker.curve.append({"tokens": 0, "seconds": 0.0, "val_loss": initial["eval_loss"], "step": 0})
    with PeakMemory(run.device) as memory:
        trainer.train(resume_from_checkpoint=checkpoint)
    train_tokens = int(trainer.state.num_input_tokens_seen)

    row = {
        "task": task,
        "model": family,
        "seed": trial.seed,
        "params_total": counts["total"],
        "params_non_embedding": counts["non_embedding"],
        "shape": shape(model.config),
        "training": "stateful" if recipe.stateful else ("blocks" if task == "lm" else "documents"),
        "optimizer": recipe.optimizer,
        "learning_rate": trial.learning_rate,
        **({"pooling": classifier_pooling(family, settings)} if task == "classify" else {}),
        "train_tokens": train_tokens,
        "train_seconds": round(tracker.training_seconds, 2),
        "train_tokens_per_second": round(train_tokens / max(tracker.training_seconds, 1e-9), 1),
        "peak_memory_mb": round(memory.megabytes, 1),
        "curve": tracker.curve,
        "checkpoint": str(output_dir.relative_to(run.folder.path)),
        **held_out_figures(trainer, task, data, settings.preset),
    }
    if task == "lm":
        row["train_unigram_loss"] = data["stats"]["train"]["unigram_loss"]
        row["generation_tokens_per_second"] = generation_speed(
            trainer.model, tokenizer, settings.preset.generation_tokens
        )
    # A diverged model (a loss that is not a number, or a perplexity past float's range) is kept and reported as
    # such, its non-finite figures as None: the model card leaves them out and results.json writes them as null.
    row["diverged"] = not all(is_finite(value) for key, value in row.items() if is_quality(key))
    row["diverged"] |= not is_finite(row["curve"][-1]["val_loss"])
    row = finite_or_null(row)
    trainer.card_info["diverged"] = row["diverged"]
    trainer.card_results.update(
        {key.replace("val_", "eval_"): value for key, value in row.items() if key.startswith(("val_", "test_"))}
    )
    trainer.save_model()
    for stale in output_dir.glob("checkpoint-*"):  # the final model is saved; intermediate states are not needed
        if stale.is_dir() and stale.relative_to(run.folder.path).as_posix() in run.folder.manifest()["whole"]:
            run.folder.remove(stale)
    row["wall_seconds"] = round(time.perf_counter() - started, 2)
    return row


def comparison_trainer(run: Comparison, trial: Trial, model, tokenizer, data: dict):
    """The trainer of one trial (its recipe, budget, evaluations along the way and checkpoints), and the callback
    that ends it at the budget and records the validation curve."""
    settings, preset, device = run.settings, run.settings.preset, run.device
    recipe = settings.recipe(trial.task, trial.family)
    if recipe.stateful:
        train_set = stateful_stream(run.corpus, tokenizer, preset, trial.seed, run.data_cache)
    else:
        train_set = data["sets"]["train"]
    budget = preset.lm_tokens if trial.task == "lm" else preset.classify_tokens
    max_steps = max(1, math.ceil(budget / (preset.batch_size * data["tokens_per_sample"])))
    args = EvolutionTrainingArguments(
        output_dir=str(run.folder.path / "models" / trial.name),
        max_steps=max_steps,
        per_device_train_batch_size=preset.batch_size,
        per_device_eval_batch_size=preset.batch_size,
        optim="sgd" if recipe.optimizer == "sgd" else "adamw_torch_fused",
        learning_rate=trial.learning_rate,
        weight_decay=recipe.weight_decay,
        warmup_steps=0.05,
        lr_scheduler_type="constant_with_warmup" if settings.budget_seconds else "linear",
        max_grad_norm=recipe.max_grad_norm,
        eval_strategy="steps",
        eval_steps=max(1, max_steps // preset.eval_points),
        save_strategy="steps",
        save_steps=max(1, max_steps // 2),
        save_total_limit=1,
        logging_steps=max(1, max_steps // 20),
        include_num_input_tokens_seen="non_padding",
        seed=trial.seed,
        use_cpu=device.type == "cpu",
        bf16=device.type == "cuda" and torch.cuda.is_bf16_supported(),
        report_to="none",
        disable_tqdm=False,
    )
    tracker = BudgetAndCurve(budget, settings.budget_seconds)
    lm = trial.task == "lm"
    trainer = EvolutionTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=data["curve_set"],
        processing_class=tokenizer,
        data_collator=default_data_collator if lm else DataCollatorWithPadding(tokenizer),
        compute_metrics=None if lm else classification_compute_metrics(),
        callbacks=[tracker],
        stateful=recipe.stateful,
        run_folder=run.folder,
        card_info={
            "task": "text-generation" if lm else "text-classification",
            "dataset": settings.dataset,
            "base_model": settings.pretrained_bert if trial.family == "bert-pretrained" else None,
            "tokenizer": f"{settings.tokenizer} shared by every model of the run, {len(tokenizer):,} tokens",
            "command": "hf-evolution compare (see results.json in the run folder for every setting)",
        },
    )
    return trainer, tracker


def held_out_figures(trainer, task: str, data: dict, preset: Preset) -> dict:
    """Validation and test figures of a trained model: loss, and perplexity and bits per byte (a language model,
    over blocks and over each split read as one stream) or accuracy and macro F1 (a classifier)."""
    figures = {}
    for split, prefix in (("validation", "val"), ("test", "test")):
        metrics = trainer.evaluate(eval_dataset=data["sets"][split], metric_key_prefix=prefix)
        figures[f"{prefix}_loss"] = metrics[f"{prefix}_loss"]
        if task == "lm":
            derived = lm_figures(metrics[f"{prefix}_loss"], data["stats"][split])
            figures[f"{prefix}_perplexity"] = derived["perplexity"]
            figures[f"{prefix}_bits_per_byte"] = derived["bits_per_byte"]
        else:
            figures[f"{prefix}_accuracy"] = metrics[f"{prefix}_accuracy"]
            figures[f"{prefix}_f1_macro"] = metrics[f"{prefix}_f1_macro"]
    if task == "lm":
        for split, prefix in (("validation", "val"), ("test", "test")):
            total, count, figures["stream_protocol"] = stream_loss(
                trainer.model, data["streams"][split], block_size=preset.block_size
            )
            derived = lm_figures(total / count, data["stats"][split])
            figures[f"{prefix}_stream_perplexity"] = derived["perplexity"]
            figures[f"{prefix}_stream_bits_per_byte"] = derived["bits_per_byte"]
    return figures


def lm_figures(loss: float, stats: dict) -> dict:
    """`lm_metrics` of a split, with the perplexity of a loss past `math.exp`'s range (above about 709 nats per
    token: a diverged model) infinite instead of an OverflowError."""
    try:
        return lm_metrics(loss, stats["tokens"], stats["bytes"])
    except OverflowError:
        return {"perplexity": math.inf, "bits_per_byte": loss * stats["tokens"] / (math.log(2) * stats["bytes"])}


def comparison_model(task: str, family: str, tokenizer, corpus, settings: RunSettings, seed: int):
    labels = corpus["train"].features["label"].names if task == "classify" else None
    if family == "bert-pretrained":
        torch.manual_seed(seed)  # the new classification head
        return TASKS[task].from_pretrained(settings.pretrained_bert, **label_fields(labels))
    fields = {"classifier_pooling": settings.pooling} if task == "classify" and family in RECURRENT_FAMILIES else {}
    if settings.preset.dropout is not None:
        fields.update(dict.fromkeys(FAMILIES[family].dropout_fields, settings.preset.dropout))
    return build_model(family, task, settings.preset.size, tokenizer, seed=seed, labels=labels, **fields)


def classifier_pooling(family: str, settings: RunSettings) -> str:
    """What a classifier reads a document through, as the table shows it."""
    if family in RECURRENT_FAMILIES:
        return settings.pooling
    return "last token" if family == "gpt2" else "[CLS]"


@torch.no_grad()
def generation_speed(model, tokenizer, new_tokens: int, repeats: int = 3) -> float:
    """Greedy tokens per second from a fixed prompt at batch 1, the best of a few runs (noise only adds time)."""
    model.eval()
    prompt = tokenizer("The government said", return_tensors="pt").to(model.device)
    kwargs = dict(
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )
    seconds = best_time(lambda: model.generate(**prompt, **kwargs), repeats, device=model.device)
    return round(new_tokens / seconds, 1)


def load_results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())
