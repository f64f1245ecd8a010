"""`hf-evolution probe context`: the loss of each token against how many tokens of context precede it, for trained
language models (how much of the past a model uses, measured)."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import load_corpus
from ..families import position_limit
from ..reporting import markdown_table, new_figure, save_figure
from ..runs import pick_device
from .common import (
    apply_preset,
    describe,
    fresh_tokenizer,
    line_styles,
    lm_blocks,
    load_language_model,
    log2_axis,
    model_specs,
    require_causal_lms,
    require_tokenizers,
    save_results,
    start_run,
)
from .options import add_common_options, add_text_options, preset_help

PLOTS = ("context.png",)
LONG_CONTEXT = 32  # gain_after_32_tokens: the last bucket before this context against the best from it on


@dataclass(frozen=True)
class Budget:
    """How the text is read; an option given on the command line wins."""

    size: str
    block_size: int
    max_blocks: int | None
    batch_size: int


PRESETS = {
    "default": Budget(size="small", block_size=512, max_blocks=None, batch_size=8),
    "smoke": Budget(size="tiny", block_size=32, max_blocks=8, batch_size=4),
}


@torch.no_grad()
def loss_by_context(model, blocks: torch.Tensor, batch_size: int, device: torch.device, desc: str) -> list[float]:
    """Mean loss (nats) of each token of the blocks by its position: list index i holds the loss of token i + 1,
    predicted from the i + 1 tokens before it. Each block starts from nothing (no carried state, no earlier keys)."""
    model.eval()
    total = torch.zeros(blocks.shape[1] - 1, dtype=torch.float64)
    for start in tqdm(range(0, len(blocks), batch_size), desc=desc, leave=False):
        input_ids = blocks[start : start + batch_size].to(device)
        logits = model(input_ids=input_ids, use_cache=False).logits[:, :-1].float()
        losses = F.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")
        total += losses.sum(dim=0).double().cpu()
    return (total / len(blocks)).tolist()


def context_buckets(losses: list[float]) -> list[dict]:
    """Mean loss over contexts 1, 2-3, 4-7, ...: one position's loss is noisy, a doubling's mean is not."""
    buckets = []
    low = 1
    while low <= len(losses):
        high = min(2 * low - 1, len(losses))
        values = losses[low - 1 : high]
        buckets.append({"context_from": low, "context_to": high, "loss": sum(values) / len(values)})
        low *= 2
    return buckets


def context_summary(buckets: list[dict]) -> dict:
    """How much the context helps, and how far back: the shortest context that gives 90% of the full gain."""
    first, best = buckets[0]["loss"], min(bucket["loss"] for bucket in buckets)
    gain = first - best
    reached = next((b["context_from"] for b in buckets if first - b["loss"] >= 0.9 * gain), None) if gain > 0 else None
    before = [bucket["loss"] for bucket in buckets if bucket["context_to"] < LONG_CONTEXT]
    after = [bucket["loss"] for bucket in buckets if bucket["context_from"] >= LONG_CONTEXT]
    return {
        "loss_at_context_1": first,
        "loss_at_longest": buckets[-1]["loss"],
        "gain": gain,
        "context_for_90_percent_of_gain": reached,
        # What the tokens beyond the first 32 add: what an undertrained model lacks (Khandelwal et al. 2018).
        "gain_after_32_tokens": before[-1] - min(after) if before and after else None,
    }


def run(args) -> int:
    apply_preset(args, PRESETS)
    specs = model_specs(args, default_families=())
    require_causal_lms(specs, "context", weights=True)
    require_tokenizers(specs)
    device = pick_device(args.device)
    units = {
        "loss_by_context": "list index i = loss (nats) of a token predicted from the i + 1 tokens before it, mean "
        "over the blocks",
        "buckets": "mean loss over contexts context_from..context_to",
        "summary": "gain = loss at context 1 minus the lowest bucket loss; context_for_90_percent_of_gain = the "
        "shortest bucket whose loss is within 10% of that gain from the lowest; gain_after_32_tokens = the loss of "
        "the bucket of contexts 16-31 minus the lowest bucket loss from context 32 on (nats)",
    }
    folder, results = start_run(args, "context", units, PLOTS)
    with folder.discarded_on_failure():
        corpus = load_corpus(args.dataset)
        tokenizer = fresh_tokenizer(args, specs, corpus)
        for spec in specs:
            model, model_tokenizer = load_language_model(spec, tokenizer, args.seed, args.block_size)
            model.to(device)
            block_size = args.block_size
            limit = position_limit(model.config)
            if limit is not None and limit < block_size:
                print(f"{spec.name}: blocks of {limit} tokens, its number of learned positions", file=sys.stderr)
                block_size = limit
            blocks = lm_blocks(corpus[args.split], model_tokenizer, block_size, args.max_blocks)
            losses = loss_by_context(model, blocks, args.batch_size, device, spec.name)
            buckets = context_buckets(losses)
            entry = describe(spec, model)
            entry.update(
                block_size=block_size,
                blocks=len(blocks),
                buckets=buckets,
                summary=context_summary(buckets),
                loss_by_context=losses,
            )
            results["models"][spec.name] = entry
            save_results(folder, results, plot_context)
    rows = [{"model": name, **entry["summary"]} for name, entry in results["models"].items()]
    columns = {
        "model": "model",
        "loss_at_context_1": "loss, 1 token of context",
        "loss_at_longest": "loss, longest contexts",
        "gain": "gain (nats)",
        "context_for_90_percent_of_gain": "context for 90% of the gain",
        "gain_after_32_tokens": "gain after 32 tokens (nats)",
    }
    print(f"Loss (nats per token) by context on the {args.split} split:\n" + markdown_table(rows, columns))
    print(f"\nResults and plots in {folder.path}")
    return 0


def plot_context(run_dir: Path, results: dict) -> list[str]:
    models = results["models"]
    styles = line_styles(models)
    figure, axis = new_figure(6.5, 4.2)
    for name, entry in models.items():
        centres = [math.sqrt(b["context_from"] * b["context_to"]) for b in entry["buckets"]]
        axis.plot(centres, [b["loss"] for b in entry["buckets"]], marker="o", **styles[name])
    axis.set(xlabel="tokens of context before the predicted token", ylabel="loss (nats per token)")
    longest = max(entry["block_size"] for entry in models.values())
    log2_axis(axis, [2**power for power in range(longest.bit_length())])
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize="small")
    return [save_figure(figure, run_dir / PLOTS[0]).name]


def add_parser(subcommands) -> None:
    context = subcommands.add_parser(
        "context",
        help="loss against how many tokens of context precede each token (trained LMs)",
        description="For trained language models: the text of a split is cut into blocks, each read from "
        "nothing, and the loss of every token is averaged by its position, i.e. by how many tokens of context "
        "the model had. The curve flattens where a model stops using more context. Give --model folders that hold "
        "the model and its tokenizer; fresh --models only give an untrained baseline.",
    )
    add_common_options(context, "context", PRESETS, "none: give --model FOLDER")
    add_text_options(context)
    budget = context.add_argument_group("measurement")
    budget.add_argument(
        "--split", choices=("train", "validation", "test"), default="validation", help="(default: validation)"
    )
    budget.add_argument(
        "--block-size", type=int, help=preset_help(PRESETS, "block_size", "tokens per block: the longest context")
    )
    budget.add_argument("--max-blocks", type=int, help=preset_help(PRESETS, "max_blocks", "blocks read (None: all)"))
    budget.add_argument("--batch-size", type=int, help=preset_help(PRESETS, "batch_size", "blocks per batch"))
    context.set_defaults(run=run)
