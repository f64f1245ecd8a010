"""`hf-evolution probe speed`: training-step and forward time against sequence length, and generation time per token
and cache bytes against context length (sequential against parallel cost, constant against growing memory)."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PreTrainedModel

from ..families import build_model, position_limit, prepare_model
from ..reporting import markdown_table, new_figure, save_figure
from ..runs import best_time, cache_bytes, pick_device, synchronize
from .common import (
    DEFAULT_FAMILIES,
    ModelSpec,
    apply_preset,
    causal_lm_problem,
    describe,
    line_styles,
    log2_axis,
    model_specs,
    require_causal_lms,
    save_results,
    split_ints,
    start_run,
)
from .options import add_common_options, preset_help

PLOTS = ("speed-time.png", "speed-generation.png")


@dataclass(frozen=True)
class Budget:
    """What is timed and how often; an option given on the command line wins."""

    size: str
    lengths: str
    contexts: str
    batch_size: int
    new_tokens: int
    repeats: int
    vocab_size: int
    max_step_seconds: float


PRESETS = {
    "default": Budget(
        size="small",
        lengths="64,128,256,512,1024,2048",
        contexts="64,128,256,512,1024,2048,4096",
        batch_size=8,
        new_tokens=32,
        repeats=3,
        vocab_size=8192,
        max_step_seconds=20.0,
    ),
    "smoke": Budget(
        size="tiny",
        lengths="16,32",
        contexts="16,64",
        batch_size=2,
        new_tokens=4,
        repeats=1,
        vocab_size=320,
        max_step_seconds=60.0,
    ),
}


def speed_model(spec: ModelSpec, args, longest: int) -> PreTrainedModel:
    """A folder's model as saved, or a fresh one over a vocabulary of `--vocab-size` with positions for `longest`
    tokens; BERT as a token classifier over the vocabulary (an output layer as large as an LM head)."""
    if spec.path is not None:
        return prepare_model(AutoModelForCausalLM.from_pretrained(spec.path))
    task, labels = "lm", {}
    if causal_lm_problem(spec.config()) is not None:
        task, labels = "tokens", {"num_labels": args.vocab_size}
    return build_model(spec.family, task, spec.size, args.vocab_size, seed=args.seed, min_positions=longest, **labels)


@torch.no_grad()
def forward_pass(model, input_ids: torch.Tensor) -> None:
    model(input_ids=input_ids, use_cache=False)


def training_step(model, optimizer, input_ids: torch.Tensor) -> None:
    model(input_ids=input_ids, labels=input_ids, use_cache=False).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def time_lengths(model, lengths: list[int], args, device: torch.device, desc: str) -> tuple[dict, str | None]:
    """Milliseconds of a forward pass (no gradients) and of a training step (forward, backward, AdamW step) on a
    batch of random tokens, at each sequence length; and why longer lengths were skipped, if they were: once a step
    takes over `max_step_seconds`, longer ones would only take longer."""
    limit = position_limit(model.config)
    generator = torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    timings, skipped = {}, None
    for length in tqdm(lengths, desc=desc, leave=False):
        if (limit is not None and length > limit) or skipped:
            timings[str(length)] = None  # beyond the learned positions, or too slow
            continue
        input_ids = torch.randint(model.config.vocab_size, (args.batch_size, length), generator=generator).to(device)

        model.eval()
        forward_seconds = best_time(partial(forward_pass, model, input_ids), args.repeats, device=device)
        model.train()
        step = partial(training_step, model, optimizer, input_ids)
        train_seconds = best_time(step, 1, warmup=0, device=device)  # the warm-up, timed
        if train_seconds <= args.max_step_seconds:  # one step over the limit is measurement enough
            train_seconds = min(train_seconds, best_time(step, args.repeats, warmup=0, device=device))
        timings[str(length)] = {
            "forward_ms": 1000 * forward_seconds,
            "train_step_ms": 1000 * train_seconds,
            "train_tokens_per_s": args.batch_size * length / train_seconds,
        }
        if train_seconds > args.max_step_seconds and length != lengths[-1]:
            skipped = (
                f"lengths over {length} skipped: a training step at {length} tokens took {train_seconds:.0f} s, "
                f"over --max-step-seconds {args.max_step_seconds:g}"
            )
    model.eval()
    return timings, skipped


@torch.no_grad()
def time_generation(model, contexts: list[int], args, device: torch.device, desc: str) -> dict:
    """Greedy decoding of `new_tokens` tokens, one at a time with the cache, after a random prompt of each context
    length: milliseconds per new token (fastest of `repeats`) and the bytes of the cache after the prompt."""
    model.eval()
    limit = position_limit(model.config)
    generator = torch.Generator().manual_seed(args.seed)
    timings = {}
    for context in tqdm(contexts, desc=desc, leave=False):
        if limit is not None and context + args.new_tokens > limit:
            timings[str(context)] = None  # beyond the learned positions
            continue
        prompt = torch.randint(model.config.vocab_size, (1, context), generator=generator).to(device)
        seconds = []
        for _ in range(args.repeats + 1):  # the first round warms up
            output = model(input_ids=prompt, use_cache=True, logits_to_keep=1)  # as generate() reads the prompt
            cache, next_ids = output.cache, output.logits[:, -1:].argmax(dim=-1)
            prompt_cache_bytes = cache_bytes(cache)
            synchronize(device)
            start = time.perf_counter()
            for _ in range(args.new_tokens):
                output = model(input_ids=next_ids, cache=cache, use_cache=True)
                next_ids = output.logits[:, -1:].argmax(dim=-1)
            synchronize(device)
            seconds.append(time.perf_counter() - start)
        timings[str(context)] = {
            "ms_per_token": 1000 * min(seconds[1:]) / args.new_tokens,
            "cache_bytes": prompt_cache_bytes,
        }
    return timings


def run(args) -> int:
    apply_preset(args, PRESETS)
    specs = model_specs(args)
    for spec in specs:
        if spec.path is not None:
            require_causal_lms([spec], "speed", weights=False)
    device = pick_device(args.device)
    units = {
        "forward_ms": "milliseconds per forward pass without gradients, batch of `batch_size` sequences",
        "train_step_ms": "milliseconds per training step (forward, backward, AdamW step), same batch",
        "train_tokens_per_s": "tokens per second in training",
        "ms_per_token": "milliseconds per generated token (greedy, batch 1, with the cache), after the prompt",
        "cache_bytes": "bytes of the tensors in the cache after a prompt of `context` tokens",
        "times": "fastest of `repeats` runs after a warm-up; null: longer than the model's learned positions, or "
        "skipped as `lengths_skipped` says",
    }
    lengths, contexts = split_ints(args.lengths, "--lengths"), split_ints(args.contexts, "--contexts")
    folder, results = start_run(args, "speed", units, PLOTS)
    with folder.discarded_on_failure():
        for spec in specs:
            model = speed_model(spec, args, max(lengths[-1], contexts[-1] + args.new_tokens)).to(device)
            entry = describe(spec, model)
            entry["load_average_before"] = os.getloadavg()
            entry["lengths"], skipped = time_lengths(model, lengths, args, device, f"{spec.name} lengths")
            if skipped:
                entry["lengths_skipped"] = skipped
                print(f"{spec.name}: {skipped}", file=sys.stderr)
            problem = causal_lm_problem(model.config)
            if problem is None:
                entry["generation"] = time_generation(model, contexts, args, device, f"{spec.name} generation")
            else:
                entry["generation_skipped"] = f"no generation: {problem}"
                print(f"{spec.name}: {entry['generation_skipped']}", file=sys.stderr)
            entry["load_average_after"] = os.getloadavg()
            results["models"][spec.name] = entry
            save_results(folder, results, plot_speed)
    print(speed_tables(results, lengths, contexts))
    print(f"\nResults and plots in {folder.path}")
    return 0


def speed_tables(results: dict, lengths: list[int], contexts: list[int]) -> str:
    tables = []
    for key, metric, points, title in (
        ("lengths", "train_step_ms", lengths, "Training step (ms) by sequence length"),
        ("lengths", "forward_ms", lengths, "Forward pass (ms) by sequence length"),
        ("generation", "ms_per_token", contexts, "Generation (ms per token) by context length"),
        ("generation", "cache_bytes", contexts, "Cache (bytes) by context length"),
    ):
        rows = []
        for name, entry in results["models"].items():
            values = entry.get(key, {})
            rows.append({"model": name, **{p: (values.get(str(p)) or {}).get(metric) for p in points}})
        tables.append(f"{title}:\n" + markdown_table(rows, {"model": "model", **{p: str(p) for p in points}}))
    return "\n\n".join(tables)


def plot_speed(run_dir: Path, results: dict) -> list[str]:
    models = results["models"]
    styles = line_styles(models)
    panels = {
        PLOTS[0]: (
            ("lengths", "train_step_ms", "training step (ms)", "sequence length (tokens)", "log"),
            ("lengths", "forward_ms", "forward pass (ms)", "sequence length (tokens)", "log"),
        ),
        PLOTS[1]: (  # per-token times vary by a few times at most: a linear axis shows them better
            ("generation", "ms_per_token", "generation (ms per token)", "context (tokens)", "linear"),
            ("generation", "cache_bytes", "cache (bytes)", "context (tokens)", "log"),
        ),
    }
    files = []
    for filename, metrics in panels.items():
        figure, axes = new_figure(10.0, 4.0, ncols=2, squeeze=False)
        for axis, (key, metric, ylabel, xlabel, yscale) in zip(axes[0], metrics, strict=True):
            for name, entry in models.items():
                points = {int(p): v[metric] for p, v in entry.get(key, {}).items() if v is not None}
                if points:
                    axis.plot(list(points), list(points.values()), marker="o", **styles[name])
            axis.set(xlabel=xlabel, ylabel=ylabel, yscale=yscale)
            if yscale == "linear":
                axis.set_ylim(bottom=0)
            log2_axis(axis, split_ints(results["settings"][key if key == "lengths" else "contexts"], key))
            axis.grid(True, which="both", alpha=0.3)
            if axis.has_data():  # BERT alone has nothing to show in the generation panels
                axis.legend(fontsize="small")
        files.append(save_figure(figure, run_dir / filename).name)
    return files


def add_parser(subcommands) -> None:
    speed = subcommands.add_parser(
        "speed",
        help="training/forward time against length, generation time and cache bytes against context",
        description="Training-step time (forward, backward, AdamW) and forward time against sequence length on "
        "random tokens, then greedy generation with the cache after prompts of growing length: milliseconds "
        "per token and the bytes of the cache's tensors (a recurrent state is fixed; attention keys and values "
        "grow with the context). Times are the fastest of --repeats after a warm-up; the load average of the "
        "machine is recorded, since other work on it slows every figure. BERT is timed but cannot generate.",
    )
    add_common_options(speed, "speed", PRESETS, ",".join(DEFAULT_FAMILIES) + " unless --model is given")
    budget = speed.add_argument_group("measurements")
    budget.add_argument("--lengths", help=preset_help(PRESETS, "lengths", "sequence lengths of the timings"))
    budget.add_argument("--contexts", help=preset_help(PRESETS, "contexts", "prompt lengths before generating"))
    budget.add_argument("--batch-size", type=int, help=preset_help(PRESETS, "batch_size", "sequences per batch"))
    budget.add_argument("--new-tokens", type=int, help=preset_help(PRESETS, "new_tokens", "tokens generated"))
    budget.add_argument("--repeats", type=int, help=preset_help(PRESETS, "repeats", "timed runs, the fastest kept"))
    budget.add_argument(
        "--vocab-size", type=int, help=preset_help(PRESETS, "vocab_size", "vocabulary of the fresh models")
    )
    budget.add_argument(
        "--max-step-seconds",
        type=float,
        help=preset_help(
            PRESETS, "max_step_seconds", "skip a model's longer lengths once a training step takes longer"
        ),
    )
    speed.set_defaults(run=run)
