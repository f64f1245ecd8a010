"""`hf-evolution probe memory`: accuracy against distance on synthetic long-range tasks, each model trained from
scratch for the same budget at every distance (memory of the distant past, measured)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, PreTrainedModel

from ..families import TASKS, build_model, parameter_counts, position_limit, prepare_model
from ..reporting import markdown_table, new_figure, save_figure
from ..runs import pick_device
from .common import (
    DEFAULT_FAMILIES,
    ModelSpec,
    apply_preset,
    causal_lm_problem,
    describe,
    line_styles,
    log2_axis,
    model_specs,
    save_results,
    split_ints,
    split_list,
    start_run,
)
from .options import add_common_options, preset_help
from .tasks import IGNORE_INDEX, SYNTHETIC_TASKS, SyntheticTask

PLOTS = ("memory.png",)


@dataclass(frozen=True)
class Budget:
    """Tasks, distances and the training budget at each; an option given on the command line wins."""

    size: str
    tasks: str
    distances: str
    steps: int
    batch_size: int
    lr: float
    eval_size: int
    max_minutes: float


PRESETS = {
    "default": Budget(
        size="tiny",
        tasks="copy,adding,mqar",
        distances="16,32,64,128,256",
        steps=400,
        batch_size=32,
        lr=3e-3,
        eval_size=1024,
        max_minutes=5.0,
    ),
    "smoke": Budget(
        size="tiny",
        tasks="copy,adding,mqar",
        distances="2,8",
        steps=300,
        batch_size=32,
        lr=1e-2,
        eval_size=256,
        max_minutes=5.0,
    ),
}


def dropout_off(config) -> dict:
    """Every dropout field of a config at 0: the tasks have no noise to regularise."""
    return {
        name: 0.0
        for name, value in vars(config).items()
        if ("dropout" in name or "pdrop" in name) and isinstance(value, float)
    }


def task_model(spec: ModelSpec, vocab_size: int, length: int, seed: int) -> PreTrainedModel:
    """A fresh model for a task's sequences of `length`: the family at `--size` (parameter-matched), or a folder's
    architecture with the task's vocabulary (its weights are not used). Causal models predict with their LM head; a
    bidirectional encoder (BERT) reads the whole sequence and predicts at every position with a token classifier."""
    task = "lm" if causal_lm_problem(spec.config()) is None else "tokens"
    labels = {"num_labels": vocab_size} if task == "tokens" else {}
    if spec.path is None:
        fields = dropout_off(AutoConfig.for_model(spec.family))
        return build_model(
            spec.family, task, spec.size, vocab_size, seed=seed, min_positions=length, **fields, **labels
        )
    config = spec.config()
    config.vocab_size = vocab_size
    config.pad_token_id = config.bos_token_id = config.eos_token_id = None
    for name, value in {**dropout_off(config), **labels}.items():
        setattr(config, name, value)
    limit = position_limit(config)
    if limit is not None and limit < length:
        config.max_position_embeddings = length
    torch.manual_seed(seed)
    return prepare_model(TASKS[task].from_config(config))


TIMED_STEPS = 5  # the steps that predict how long the whole budget takes


def train_on_task(model, task: SyntheticTask, distance: int, args, device: torch.device, desc: str) -> dict:
    """Train for the budget (`steps` batches of `batch_size`) with AdamW, then score fresh sequences. Every model
    sees the same batches: the data generator restarts from the seed. If the first steps say the budget would take
    over `max_minutes`, stop there and return why instead (`skipped`)."""
    generator = torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    model.train()
    start = time.perf_counter()
    for step in tqdm(range(args.steps), desc=desc, leave=False):
        if step == TIMED_STEPS:
            projected = (time.perf_counter() - start) / TIMED_STEPS * args.steps
            if projected > 60 * args.max_minutes:
                return {
                    "skipped": f"{args.steps} steps would take about {projected / 60:.2g} min, over --max-minutes "
                    f"{args.max_minutes:g}"
                }
        inputs, targets = task.make_batch(args.batch_size, distance, generator)
        logits = model(input_ids=inputs.to(device), use_cache=False).logits
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.to(device).flatten())
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    train_seconds = time.perf_counter() - start
    accuracy = task_accuracy(model, task, distance, args.eval_size, args.seed + 1, device)
    return {"accuracy": accuracy, "final_loss": loss.item(), "train_seconds": train_seconds}


@torch.no_grad()
def task_accuracy(model, task: SyntheticTask, distance: int, size: int, seed: int, device: torch.device) -> float:
    """Fraction of the answers due (recalled symbols, sums, queried values) that the model predicts exactly."""
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    correct = total = 0
    for start in range(0, size, 256):
        inputs, targets = task.make_batch(min(256, size - start), distance, generator)
        predictions = model(input_ids=inputs.to(device), use_cache=False).logits.argmax(dim=-1).cpu()
        scored = targets != IGNORE_INDEX
        correct += int((predictions[scored] == targets[scored]).sum())
        total += int(scored.sum())
    return correct / total


def run(args) -> int:
    apply_preset(args, PRESETS)
    specs = model_specs(args)
    device = pick_device(args.device)
    units = {
        "accuracy": "fraction of the answers due that are predicted exactly, on `eval_size` fresh sequences",
        "distance": "per task, see `tasks`",
        "final_loss": "cross-entropy in nats on the answers of the last training batch",
        "train_seconds": "seconds of training at that distance",
        "skipped": "distances not trained, and why (a budget over --max-minutes)",
    }
    task_names = split_list(args.tasks)
    for name in task_names:
        if name not in SYNTHETIC_TASKS:
            raise ValueError(f"Unknown task {name!r}; choose among {', '.join(SYNTHETIC_TASKS)}.")
    distances = split_ints(args.distances, "--distances")
    for name in task_names:
        task = SYNTHETIC_TASKS[name]
        if distances[0] < task.min_distance:
            raise ValueError(f"The {name} task needs distances of at least {task.min_distance} ({task.distance}).")
    folder, results = start_run(args, "memory", units, PLOTS)
    results["tasks"] = {
        name: {"chance": SYNTHETIC_TASKS[name].chance, "distance": SYNTHETIC_TASKS[name].distance}
        for name in task_names
    }
    with folder.discarded_on_failure():
        for spec in specs:
            entry = {"source": spec.source, "family": spec.family, "tasks": {}}
            results["models"][spec.name] = entry
            for name in task_names:
                task = SYNTHETIC_TASKS[name]
                task_entry = entry["tasks"][name] = {"accuracy": {}, "final_loss": {}, "train_seconds": {}}
                for distance in distances:
                    if "skipped" in task_entry:  # a longer distance would take longer still
                        task_entry["skipped"][str(distance)] = "skipped, as the shorter distance was"
                        save_results(folder, results, plot_memory)
                        continue
                    length = task.make_batch(1, distance, torch.Generator())[0].shape[1]
                    model = task_model(spec, task.vocab_size, length, args.seed).to(device)
                    if "parameters" not in task_entry:
                        task_entry.update(parameters=parameter_counts(model), config=describe(spec, model)["config"])
                    outcome = train_on_task(model, task, distance, args, device, f"{spec.name} {name} d={distance}")
                    for key, value in outcome.items():
                        task_entry.setdefault(key, {})[str(distance)] = value
                    save_results(folder, results, plot_memory)
    print(memory_table(results, distances))
    print(f"\nResults and plots in {folder.path}")
    return 0


def memory_table(results: dict, distances: list[int]) -> str:
    rows = []
    for name, entry in results["models"].items():
        for task_name, task_entry in entry["tasks"].items():
            accuracy = task_entry["accuracy"]
            row = {"model": name, "task": task_name, "chance": results["tasks"][task_name]["chance"]}
            rows.append({**row, **{d: accuracy.get(str(d)) for d in distances}})
    columns = {"model": "model", "task": "task", "chance": "chance", **{d: f"d={d}" for d in distances}}
    return "Accuracy against distance:\n" + markdown_table(rows, columns)


def plot_memory(run_dir: Path, results: dict) -> list[str]:
    models, tasks = results["models"], results["tasks"]
    styles = line_styles(models)
    figure, axes = new_figure(4.2 * len(tasks), 3.8, ncols=len(tasks), squeeze=False, sharey=True)
    for axis, (task_name, task) in zip(axes[0], tasks.items(), strict=True):
        for name, entry in models.items():
            accuracy = entry["tasks"].get(task_name, {}).get("accuracy", {})
            if accuracy:
                distances = [int(d) for d in accuracy]
                axis.plot(distances, list(accuracy.values()), marker="o", **styles[name])
        axis.axhline(task["chance"], color="grey", linestyle="--", linewidth=1, label="chance")
        axis.set(title=task_name, xlabel="distance (tokens)", ylim=(0, 1.02))
        log2_axis(axis, split_ints(results["settings"]["distances"], "--distances"))
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="x-small")
    axes[0][0].set_ylabel("accuracy")
    return [save_figure(figure, run_dir / PLOTS[0]).name]


def add_parser(subcommands) -> None:
    memory = subcommands.add_parser(
        "memory",
        help="accuracy against distance on copy, adding and associative-recall tasks",
        description="Synthetic long-range tasks generated on the fly from the seed: copy after a delay, the adding "
        "problem (Hochreiter & Schmidhuber 1997) and multi-query associative recall (Zoology, Arora et al. 2023). "
        "Each model is trained from scratch (AdamW, gradients clipped to 1, dropout off) for the same budget of "
        "steps x batch at each distance and scored on fresh sequences: accuracy against distance, with chance "
        "drawn. A --model folder gives its architecture; its weights are not used. The default budget takes "
        "about 10 minutes on a 2-core CPU.",
    )
    add_common_options(memory, "memory", PRESETS, ",".join(DEFAULT_FAMILIES) + " unless --model is given")
    budget = memory.add_argument_group("tasks and budget")
    budget.add_argument(
        "--tasks", help=preset_help(PRESETS, "tasks", f"comma-separated, among {','.join(SYNTHETIC_TASKS)}")
    )
    budget.add_argument("--distances", help=preset_help(PRESETS, "distances", "comma-separated distances"))
    budget.add_argument("--steps", type=int, help=preset_help(PRESETS, "steps", "training steps per distance"))
    budget.add_argument("--batch-size", type=int, help=preset_help(PRESETS, "batch_size", "sequences per step"))
    budget.add_argument("--lr", type=float, help=preset_help(PRESETS, "lr", "AdamW learning rate"))
    budget.add_argument("--eval-size", type=int, help=preset_help(PRESETS, "eval_size", "fresh sequences scored"))
    budget.add_argument(
        "--max-minutes",
        type=float,
        help=preset_help(PRESETS, "max_minutes", "skip a distance (and longer ones) whose budget would take longer"),
    )
    memory.set_defaults(run=run)
