"""`hf-evolution probe gradients`: the norm of d loss(t) / d h(t - k) against the distance k, before and after a short
training, and the gradient norm of each layer during that training (vanishing gradients, measured)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from ..data import load_corpus
from ..families import position_limit
from ..reporting import markdown_table, new_figure, save_figure
from ..runs import pick_device
from .common import (
    DEFAULT_FAMILIES,
    apply_preset,
    describe,
    fresh_tokenizer,
    line_styles,
    lm_blocks,
    load_language_model,
    model_specs,
    require_causal_lms,
    require_tokenizers,
    save_results,
    start_run,
)
from .options import add_common_options, add_text_options, preset_help

PLOTS = ("gradients.png", "gradients-layers.png")


@dataclass(frozen=True)
class Budget:
    """How long the probe trains and how much it measures; an option given on the command line wins."""

    size: str
    length: int
    steps: int
    batch_size: int
    samples: int
    lr: float
    log_every: int


PRESETS = {
    "default": Budget(size="small", length=256, steps=200, batch_size=16, samples=64, lr=1e-3, log_every=10),
    "smoke": Budget(size="tiny", length=32, steps=8, batch_size=4, samples=4, lr=1e-3, log_every=2),
}


def gradient_curves(model: PreTrainedModel, blocks: torch.Tensor, device: torch.device) -> dict[str, list[float]]:
    """Mean norm over `blocks` of d loss(t) / d h_l(t - k) for every distance k, t the last position of the block.

    h_l is the input of layer l + 1 (h0: the embeddings), read from `output_hidden_states` with `retain_grad`, so the
    same code measures recurrent and attention models. The output of the last layer is left out: it reaches the loss
    at t only at t itself. The loss is summed over the batch, whose rows never interact, so each row's gradient is
    its own loss's gradient.
    """
    model.eval()
    inputs, targets = blocks[:, :-1].to(device), blocks[:, -1].to(device)
    outputs = model(input_ids=inputs, output_hidden_states=True, use_cache=False, logits_to_keep=1)
    layer_inputs = outputs.hidden_states[:-1]
    for hidden in layer_inputs:
        hidden.retain_grad()
    F.cross_entropy(outputs.logits[:, -1].float(), targets, reduction="sum").backward()
    curves = {
        f"h{index}": hidden.grad.norm(dim=-1).mean(dim=0).flip(0).tolist() for index, hidden in enumerate(layer_inputs)
    }
    model.zero_grad(set_to_none=True)
    return curves


def parameter_groups(model: PreTrainedModel) -> dict[str, list[nn.Parameter]]:
    """Parameters by layer, read from their names: embeddings, `layer i` (any `.<i - 1>.` in the name), output."""
    embeddings = {id(module.weight) for module in model.modules() if isinstance(module, nn.Embedding)}
    groups = {}
    for name, param in model.named_parameters():  # a tied weight comes once, as the embedding
        layer = re.search(r"\.(\d+)\.", name)
        if id(param) in embeddings:
            group = "embeddings"
        elif layer is not None:
            group = f"layer {int(layer.group(1)) + 1}"
        else:
            group = "output"
        groups.setdefault(group, []).append(param)
    return groups


def train_logging_gradients(model, blocks: torch.Tensor, args, device: torch.device, desc: str) -> list[dict]:
    """A short AdamW training on language-model blocks, logging the loss and each layer's gradient norm (before
    clipping to 1) at the first and last steps and every `log_every` steps."""
    groups = parameter_groups(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    model.train()
    log = []
    for step in tqdm(range(1, args.steps + 1), desc=desc, leave=False):
        rows = torch.randint(len(blocks), (args.batch_size,), generator=generator)
        input_ids = blocks[rows].to(device)
        loss = model(input_ids=input_ids, labels=input_ids, use_cache=False).loss
        loss.backward()
        if step == 1 or step % args.log_every == 0 or step == args.steps:
            norms = {
                group: math.sqrt(sum(float(param.grad.pow(2).sum()) for param in params if param.grad is not None))
                for group, params in groups.items()
            }
            log.append({"step": step, "loss": loss.item(), "grad_norm": norms})
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    return log


def run(args) -> int:
    apply_preset(args, PRESETS)
    specs = model_specs(args)
    require_causal_lms(specs, "gradients", weights=False)
    require_tokenizers(specs)
    device = pick_device(args.device)
    units = {
        "curves": "list index = distance k in tokens; value = mean over the samples of the L2 norm of "
        "d loss(t) / d h_l(t - k), loss(t) = cross-entropy (nats) of the token that follows the `length` tokens; "
        "h0 = embeddings (the input of layer 1), h<l> = output of layer l (the input of layer l + 1)",
        "training_log": "loss in nats per token; grad_norm = L2 norm of each parameter group's gradient, before "
        "clipping to 1",
    }
    folder, results = start_run(args, "gradients", units, PLOTS)
    with folder.discarded_on_failure():
        corpus = load_corpus(args.dataset)
        tokenizer = fresh_tokenizer(args, specs, corpus)
        for spec in specs:
            model, model_tokenizer = load_language_model(spec, tokenizer, args.seed, args.length)
            model.to(device)
            limit = position_limit(model.config)
            if limit is not None and limit < args.length:
                raise ValueError(f"{spec.name} accepts {limit} positions, fewer than --length {args.length}.")
            samples = lm_blocks(corpus["validation"], model_tokenizer, args.length + 1, args.samples)
            entry = describe(spec, model)
            entry["before_training"] = gradient_curves(model, samples, device)
            if args.steps > 0:
                train_blocks = lm_blocks(corpus["train"], model_tokenizer, args.length + 1)
                log = train_logging_gradients(model, train_blocks, args, device, f"{spec.name} training")
                entry["training_log"] = log
                entry["after_training"] = gradient_curves(model, samples, device)
            results["models"][spec.name] = entry
            save_results(folder, results, plot_gradients)
    print(gradients_table(results, args.length))
    print(f"\nResults and plots in {folder.path}")
    return 0


def gradients_table(results: dict, length: int) -> str:
    distances = sorted({k for k in (0, 1, 8, 64, length - 1) if k < length})
    rows = []
    for name, entry in results["models"].items():
        for phase in ("before_training", "after_training"):
            if phase in entry:
                curve = entry[phase]["h0"]
                rows.append({"model": name, "phase": phase.replace("_", " "), **{k: curve[k] for k in distances}})
    columns = {"model": "model", "phase": "when", **{k: f"k={k}" for k in distances}}
    return "Norm of d loss(t) / d h0(t - k), h0 = embeddings:\n" + markdown_table(rows, columns)


def plot_gradients(run_dir: Path, results: dict) -> list[str]:
    models = results["models"]
    phases = [phase for phase in ("before_training", "after_training") if any(phase in e for e in models.values())]
    styles = line_styles(models)
    figure, axes = new_figure(5.5 * len(phases), 4.2, ncols=len(phases), squeeze=False, sharey=True)
    for axis, phase in zip(axes[0], phases, strict=True):
        for name, entry in models.items():
            if phase in entry:
                axis.plot(entry[phase]["h0"], **styles[name])
        title = "before training (fresh: at initialisation)" if phase == "before_training" else "after training"
        if phase == "after_training":
            title = f"after {results['settings']['steps']} training steps"
        axis.set(title=title, xlabel="distance k (tokens)", yscale="log")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small")
    axes[0][0].set_ylabel("norm of d loss(t) / d h0(t - k)")
    files = [save_figure(figure, run_dir / PLOTS[0]).name]

    logged = {name: entry for name, entry in models.items() if entry.get("training_log")}
    if logged:
        figure, axes = new_figure(3.2 * len(logged), 3.4, ncols=len(logged), squeeze=False, sharey=True)
        for axis, (name, entry) in zip(axes[0], logged.items(), strict=True):
            log = entry["training_log"]
            for group in log[0]["grad_norm"]:
                axis.plot([row["step"] for row in log], [row["grad_norm"][group] for row in log], label=group)
            axis.set(title=name, xlabel="training step", yscale="log")
            axis.grid(True, which="both", alpha=0.3)
            axis.legend(fontsize="x-small")
        axes[0][0].set_ylabel("gradient norm of the layer")
        files.append(save_figure(figure, run_dir / PLOTS[1]).name)
    return files


def add_parser(subcommands) -> None:
    gradients = subcommands.add_parser(
        "gradients",
        help="gradient norm against distance (vanishing gradients), and per-layer gradient norms in training",
        description="Norm of d loss(t) / d h(t - k) against the distance k, for text of the corpus's validation "
        "split, before and after a short training (AdamW, gradients clipped to 1) on its train split, and the "
        "gradient norm of each layer during that training. h is read through output_hidden_states, so recurrent "
        "and attention models are measured alike. Needs causal models: a bidirectional one's loss at t depends "
        "on the tokens after t.",
    )
    add_common_options(gradients, "gradients", PRESETS, ",".join(DEFAULT_FAMILIES) + " unless --model is given")
    add_text_options(gradients)
    budget = gradients.add_argument_group("budget")
    budget.add_argument("--length", type=int, help=preset_help(PRESETS, "length", "tokens before the predicted one"))
    budget.add_argument("--samples", type=int, help=preset_help(PRESETS, "samples", "sequences measured"))
    budget.add_argument("--steps", type=int, help=preset_help(PRESETS, "steps", "training steps; 0: no training"))
    budget.add_argument("--batch-size", type=int, help=preset_help(PRESETS, "batch_size", "training batch"))
    budget.add_argument("--lr", type=float, help=preset_help(PRESETS, "lr", "AdamW learning rate"))
    budget.add_argument(
        "--log-every", type=int, help=preset_help(PRESETS, "log_every", "steps between gradient-norm logs")
    )
    gradients.set_defaults(run=run)
