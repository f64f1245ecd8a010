"""`hf-evolution probe scaling`: test loss against non-embedding parameters, each family trained at several sizes on
the same data, with a power-law fit per family and the sizes where families cross (Kaplan et al. 2020, Fig. 7).

Every point (line, size, seed) trains a fresh model with AdamW at its family's own learning rate from the registry,
scaled with size by Kaplan et al.'s rule (see `learning_rate`), on the same shuffled blocks, and is scored on the same
test blocks. results.json is rewritten after every point, so `--resume` continues a killed or stopped run point by
point; the plots are drawn when the run ends (or stops)."""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import to_rgb
from matplotlib.ticker import ScalarFormatter
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ..compare.experiment import lm_figures
from ..compare.settings import PRESETS as COMPARE_PRESETS
from ..compare.settings import parse_seeds, seed_list
from ..data import corpus_stats, load_corpus
from ..families import (
    FAMILIES,
    SIZES,
    ModelSize,
    build_model,
    check_family,
    count_for_config,
    family_color,
    matched_config,
    parameter_counts,
    requested_models,
    shape,
)
from ..reporting import format_value, markdown_table, new_figure, save_figure
from ..runs import environment, open_run_folder, pick_device, shared_tokenizer, write_json
from .common import apply_preset, lm_blocks, log2_axis, save_results, split_ints, start_run
from .context import context_buckets, loss_by_context
from .options import add_common_options, add_text_options, preset_help
from .scaling_fits import (
    FIT_FORMS,
    bits,
    fit_loss,
    grouped,
    mean_bits,
    parameters_of,
    summarize,
    t_interval,
)

PLOTS = ("scaling.png", "scaling-context.png")
DEFAULT_LINE = ("lstm", "gru", "gpt2", "mingru")
MIN_SIZES, MIN_SPAN, MIN_SEEDS = 5, 30.0, 2
TIMED_STEPS = 5  # the steps of a point that predict when it would end, for --max-minutes
WARMUP = 0.05  # of the steps, then linear decay to zero: the schedule the registry's learning rates were swept with
# Kaplan et al. 2020, appendix D.6 (eq. D.1): LR(N) = 0.003239 - 0.0001395 ln N for their transformers. Only its
# ratio is used: each family's registry rate holds at compare's default size, and changes with N as Kaplan's does.
KAPLAN_LR = (0.003239, 0.0001395)


@dataclass(frozen=True)
class Budget:
    """The sizes, the training budget of a point and the run's guard; an option given on the command line wins."""

    sizes: str
    tokens: int
    block_size: int
    batch_size: int
    vocab_size: int
    eval_blocks: int
    max_minutes: float
    budget: str = "fixed"
    tokens_per_parameter: float = 1.0
    seeds: int = 2
    lstm_depths: str = "1,2,4"
    fit: str = "power"
    size: None = None  # the other probes' --size, hidden here: the sizes are `sizes`


PRESETS = {  # sizes, training tokens per point (fixed budget), block size, batch size, vocabulary; then by name
    # 25k to 1.19M non-embedding parameters (47x); 200 steps of 16 blocks of 128 tokens per point: about 27 minutes
    # on 2 idle CPU cores estimated from step times, 46 with the second core busy (docs/probes.md: how it was timed).
    "default": Budget("32x2,48x2,64x3,96x4,128x6", 409_600, 128, 16, 2048, eval_blocks=256, max_minutes=75.0),
    # For a GPU: 100k to 85M (GPT-2 small's shape; 850x); give --dataset a corpus larger than BBC News for these sizes.
    "full": Budget(
        "64x2,128x4,256x4,384x6,512x8,768x12", 20_971_520, 256, 64, 8192, eval_blocks=1024, max_minutes=600
    ),
    "smoke": Budget(
        "8x1,12x1,16x1,32x1,64x1", 1024, 16, 4, 256, eval_blocks=8, max_minutes=5, tokens_per_parameter=0.05
    ),
}
CHECKED_ON_RESUME = (*Budget.__dataclass_fields__, "models", "tokenizer")  # options without a default
NOT_STORED = ("output", "resume", "overwrite", "device", "max_minutes")  # a resume may change these


@dataclass(frozen=True)
class Line:
    """One curve of the figure: a family, and for the LSTM a depth (Kaplan draws 1, 2 and 4 layers)."""

    name: str
    family: str
    depth: int | None = None

    @property
    def label(self) -> str:
        display = FAMILIES[self.family].display_name
        return display if self.depth is None else f"{display}, {self.depth} layer{'s' * (self.depth > 1)}"

    def fields(self) -> dict:
        """Config fields of its models: no dropout (under an epoch it only slows learning), and the depth."""
        fields = dict.fromkeys(FAMILIES[self.family].dropout_fields, 0.0)
        return fields if self.depth is None else {**fields, "num_hidden_layers": self.depth}


def parse_sizes(text: str) -> dict[str, ModelSize]:
    """`WIDTHxLAYERS[xHEADS]` transformer shapes (heads: one per 32 of width); every family is matched to each."""
    sizes = {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        try:
            width, layers, *heads = (int(number) for number in item.lower().split("x"))
            heads = heads[0] if len(heads) == 1 else max(1, width // 32) if not heads else 0
            if min(width, layers, heads) < 1 or width % heads:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"--sizes takes WIDTHxLAYERS or WIDTHxLAYERSxHEADS (width a multiple of heads), e.g. 32x2,64x3; got "
                f"{item!r}."
            ) from None
        sizes[item] = ModelSize(width=width, layers=layers, heads=heads)
    return sizes


@functools.cache
def reference_parameters(size: ModelSize, vocab_size: int) -> int:
    """Non-embedding parameters of GPT-2 at `size`, which every family's size is matched to."""
    return count_for_config(matched_config("gpt2", size, vocab_size), "lm")


def learning_rate(family: str, parameters: int) -> float:
    """The family's registry rate (swept at compare's default size) times LR(N) / LR(N at that size), LR(N) Kaplan's:
    1.3x the registry rate at 25k parameters, 0.9x at 1.2M, 0.5x at 85M."""
    reference = reference_parameters(SIZES[COMPARE_PRESETS["default"].size], 2)
    intercept, slope = KAPLAN_LR
    ratio = (intercept - slope * math.log(parameters)) / (intercept - slope * math.log(reference))
    return FAMILIES[family].learning_rates["lm"] * ratio


def check_settings(args) -> tuple[list[Line], dict[str, ModelSize], list[int]]:
    """Refuse, before any work, what cannot give a fit; the lines, the sizes (smallest first) and the seeds."""
    if args.model or args.size:
        raise ValueError("probe scaling trains fresh models at --sizes: it takes neither --model nor --size.")
    families = requested_models(args.models) if args.models else list(DEFAULT_LINE)
    for family in families:
        check_family(family, "lm")
    depths = split_ints(args.lstm_depths, "--lstm-depths")
    lines = [
        Line(f"lstm-{depth}", family, depth) if family == "lstm" else Line(family, family)
        for family in families
        for depth in (depths if family == "lstm" else [None])
    ]
    seeds = seed_list(args.seed, args.seeds)
    if len(seeds) < MIN_SEEDS:
        raise ValueError(f"probe scaling needs at least {MIN_SEEDS} seeds (--seeds): alpha's interval is over seeds.")
    for option in ("tokens", "block_size", "batch_size", "vocab_size", "eval_blocks"):
        if getattr(args, option) < (2 if option == "block_size" else 1):
            raise ValueError(f"--{option.replace('_', '-')} must be positive (the block size at least 2).")
    if not args.tokens_per_parameter > 0 or not args.max_minutes > 0:
        raise ValueError("--tokens-per-parameter and --max-minutes must be positive.")
    sizes = parse_sizes(args.sizes)
    counts = {name: reference_parameters(size, args.vocab_size) for name, size in sizes.items()}
    low, high = min(counts.values(), default=0), max(counts.values(), default=0)
    if len(sizes) < MIN_SIZES or high < MIN_SPAN * low:
        raise ValueError(
            f"probe scaling needs at least {MIN_SIZES} sizes spanning {MIN_SPAN:g}x in non-embedding parameters; "
            f"--sizes {args.sizes} gives {len(sizes)}, from {low:,} to {high:,} ({high / max(low, 1):.1f}x)."
        )
    return lines, dict(sorted(sizes.items(), key=lambda item: counts[item[0]])), seeds


def continued_run(args):
    """The folder and results of the run `--resume` continues, its settings put in `args`; a budget option given
    again must be the run's own."""
    if args.output is None:
        raise ValueError("--resume needs --output DIR, the folder of the run to continue.")
    folder = open_run_folder(args.output, resume=True, resume_needs="results.json", overwrite=args.overwrite)
    results = json.loads((folder.path / "results.json").read_text())
    stored = results["settings"]
    for key in CHECKED_ON_RESUME:
        given = getattr(args, key)
        if key not in NOT_STORED and given is not None and str(given) != str(stored.get(key)):
            raise ValueError(
                f"--resume continues the run with its own settings: --{key.replace('_', '-')} {given} differs from "
                f"its {stored.get(key)}; leave the option out, or start a new run."
            )
    for key, value in stored.items():
        if key not in NOT_STORED or getattr(args, key) is None:
            setattr(args, key, value)
    results.setdefault("resumed", []).append(environment()["date"])
    return folder, results


@dataclass
class ScalingData:
    """What every point reads: the train blocks (shuffled per seed), the first test blocks and the test split's size."""

    tokenizer: object
    train: torch.Tensor
    test: torch.Tensor
    test_stats: dict


def scaling_data(args, folder) -> ScalingData:
    """The corpus, and the run's tokenizer: trained once and saved in the run, so that a resume reads the same ids."""
    corpus = load_corpus(args.dataset)
    tokenizer = shared_tokenizer(
        str(args.tokenizer or "bpe"),
        corpus["train"],
        vocab_size=args.vocab_size,
        folder=folder.path / "tokenizer",
        run_folder=folder,
    )
    train = lm_blocks(corpus["train"], tokenizer, args.block_size)
    test = lm_blocks(corpus["test"], tokenizer, args.block_size, args.eval_blocks)
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"The train or test split of {args.dataset} has no block of {args.block_size} tokens.")
    return ScalingData(tokenizer, train, test, corpus_stats(corpus["test"], tokenizer))


def point_steps(args, size: ModelSize) -> int:
    """Training steps of a point: the fixed budget, or tokens proportional to the size's parameters."""
    tokens = args.tokens
    if args.budget == "proportional":
        tokens = args.tokens_per_parameter * reference_parameters(size, args.vocab_size)
    return max(1, round(tokens / (args.batch_size * args.block_size)))


def batch_order(blocks: int, needed: int, generator: torch.Generator) -> torch.Tensor:
    """Block indices for `needed` rows: the blocks shuffled anew for every epoch (the same for every line of a seed)."""
    epochs = math.ceil(needed / blocks)
    return torch.cat([torch.randperm(blocks, generator=generator) for _ in range(epochs)])[:needed]


def measure_point(line: Line, size_name: str, seed: int, data: ScalingData, args, device, deadline=None):
    """Train one model for the point's budget and score it on the test blocks; None if its first steps say it would
    end after `deadline` (a `time.perf_counter()` value)."""
    start = time.perf_counter()
    if deadline is not None and start > deadline:
        return None
    size = replace(parse_sizes(args.sizes)[size_name], max_positions=args.block_size)  # no unused positions
    model = build_model(line.family, "lm", size, data.tokenizer, seed=seed, **line.fields()).to(device)
    counts = parameter_counts(model)
    lr, steps = learning_rate(line.family, counts["non_embedding"]), point_steps(args, size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, max(1, round(WARMUP * steps)), steps)
    order = batch_order(len(data.train), steps * args.batch_size, torch.Generator().manual_seed(seed))
    losses = []
    model.train()
    for step in tqdm(range(steps), desc=f"{line.name} {shape(model.config)} seed {seed}", leave=False):
        now = time.perf_counter()
        if step == TIMED_STEPS and deadline is not None and now + (now - start) * (steps / step - 1) > deadline:
            return None
        batch = data.train[order[step * args.batch_size : (step + 1) * args.batch_size]].to(device)
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), FAMILIES[line.family].max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    by_position = loss_by_context(model, data.test, args.batch_size, device, f"{line.name} test")
    test_loss, tokens = statistics.fmean(by_position), steps * args.batch_size * args.block_size
    return {
        "size": size_name,
        "seed": seed,
        "shape": shape(model.config),
        "parameters": counts,
        "learning_rate": lr,
        "steps": steps,
        "tokens": tokens,
        "flops": 6 * counts["non_embedding"] * tokens,
        "train_loss": statistics.fmean(losses[-10:]),
        "test_loss": test_loss,
        "test_bits_per_byte": lm_figures(test_loss, data.test_stats)["bits_per_byte"],  # a diverged loss's too
        "context_buckets": context_buckets(by_position),
        "wall_seconds": time.perf_counter() - start,
    }


# --- the run ---------------------------------------------------------------------------------------------------------

UNITS = {
    "parameters": "non_embedding: parameters outside the token and position embeddings and the output layer (Kaplan's "
    "N); total: all",
    "tokens": "training tokens of the point (steps x batch_size x block_size)",
    "flops": "training compute estimate 6 N D (N non-embedding parameters, D tokens)",
    "test_loss": "nats per token, mean over the first eval_blocks test blocks, each read from nothing",
    "test_bits_per_byte": "test_loss x tokens / (ln 2 x UTF-8 bytes) of the test split",
    "context_buckets": "mean test loss (nats) of the tokens with context_from..context_to tokens before them",
    "wall_seconds": "seconds to build, train and score the point",
    "fits": "least squares on ln(test bits per byte) against N, per seed and on the mean over seeds, of the form "
    "`fit` names; alpha: mean and 95% t interval over seeds",
    "crossings": "sizes N inside both lines' measured range where their fitted curves meet; ci95 over seeds",
}
LEARNING_RATES = (
    "each family's registry rate (FAMILIES[f].learning_rates['lm'], swept at compare's default size) times LR(N) / "
    "LR(N_ref), LR(N) = 0.003239 - 0.0001395 ln N (Kaplan et al. 2020, appendix D.6), N_ref GPT-2's non-embedding "
    f"parameters at that size; AdamW, weight decay 0.01, {WARMUP:.0%} warm-up then linear decay to 0, each family's "
    "gradient clipping, no dropout"
)


def run(args) -> int:
    folder, results = continued_run(args) if args.resume else (None, None)
    apply_preset(args, PRESETS)
    lines, sizes, seeds = check_settings(args)
    device = pick_device(args.device)
    if folder is None:
        folder, results = start_run(args, "scaling", UNITS, PLOTS)
        results.update(fit_form=FIT_FORMS[args.fit], learning_rates=LEARNING_RATES)
        results["models"] = {
            line.name: {"family": line.family, "label": line.label, "depth": line.depth, "points": []}
            for line in lines
        }
    done = {(name, p["size"], p["seed"]) for name, entry in results["models"].items() for p in entry["points"]}
    points = [(seed, size, line) for seed in seeds for size in sizes for line in lines]
    start = time.perf_counter()
    deadline = start + 60 * args.max_minutes
    print(
        f"probe scaling: {len(lines)} lines x {len(sizes)} sizes x {len(seeds)} seeds, {len(done)} of {len(points)} "
        f"points done; {args.budget} budget",
        file=sys.stderr,
    )
    with folder.discarded_on_failure():
        data = scaling_data(args, folder)
        results.pop("stopped", None)
        for index, (seed, size, line) in enumerate(points, start=1):
            if (line.name, size, seed) in done:
                continue
            point = measure_point(line, size, seed, data, args, device, deadline)
            if point is None:
                results["stopped"] = (
                    f"--max-minutes {args.max_minutes:g} reached; next: {line.name} {size} seed {seed}"
                )
                print(f"Stopped: {results['stopped']}. --resume --output {folder.path} continues.", file=sys.stderr)
                break
            results["models"][line.name]["points"].append(point)
            summarize(results)
            write_json(folder.path / "results.json", results)
            folder.mark_progress()
            print(
                f"[{index}/{len(points)}] {line.name} {size} seed {seed}: N = {parameters_of(point):,}, "
                f"{point['test_bits_per_byte']:.4f} bits/byte, {point['wall_seconds']:.0f} s "
                f"(run {(time.perf_counter() - start) / 60:.1f} min)",
                file=sys.stderr,
            )
        summarize(results)
        save_results(folder, results, plot_scaling)
    print(scaling_report(results, sizes))
    print(f"\nResults and plots in {folder.path}")
    return 0


def scaling_report(results: dict, sizes) -> str:
    rows = []
    for name, entry in results["models"].items():
        alpha = (results["fits"].get(name) or {}).get("alpha") or {}
        row = {"line": name, **{size: mean_bits(group) for size, group in grouped(entry["points"], "size").items()}}
        row["alpha"] = alpha.get("mean")
        row["ci95"] = " to ".join(f"{bound:.3g}" for bound in alpha["ci95"]) if alpha.get("ci95") else None
        rows.append(row)
    columns = {"line": "line", **{size: size for size in sizes}, "alpha": "alpha", "ci95": "alpha, 95% interval"}
    crossing = "\n".join(pair["text"] for pair in results["crossings"])
    return f"Test bits per byte by size, and {results['fit_form']}:\n{markdown_table(rows, columns)}\n\n{crossing}"


def line_style(entry: dict) -> dict:
    """The family's colour, lighter or darker by LSTM depth, and a marker per depth."""
    depth = entry["depth"]
    color = np.array(to_rgb(family_color(entry["family"])))
    if depth is not None:
        color = color + (1 - color) * 0.45 if depth < 2 else color * (0.6 if depth > 2 else 1.0)
    markers = {None: "o", 1: "v", 2: "o", 4: "s"}
    return {"color": tuple(color), "marker": markers.get(depth, "D"), "label": entry["label"]}


def plot_scaling(run_dir: Path, results: dict) -> list[str]:
    figure, axis = new_figure(7.0, 4.8)
    context_figure, context_axis = new_figure(7.0, 4.5)
    for name, entry in results["models"].items():
        sizes = sorted(grouped(entry["points"], "size").values(), key=lambda group: parameters_of(group[0]))
        if not sizes:
            continue
        style, counts = line_style(entry), [parameters_of(group[0]) for group in sizes]
        fit = results["fits"][name]["mean_fit"]
        if fit is not None:
            style["label"] += f" (alpha {fit['alpha']:.3f})"
            grid = np.geomspace(counts[0], counts[-1], 100)
            axis.plot(grid, fit_loss(fit, grid), linestyle="--", linewidth=1, color=style["color"])
        spreads = [t_interval([bits(p) for p in group])["std"] or 0.0 for group in sizes]
        axis.errorbar(counts, [mean_bits(group) for group in sizes], yerr=spreads, capsize=3, linewidth=1, **style)
        largest = sizes[-1]
        buckets = largest[0]["context_buckets"]
        centres = [math.sqrt(bucket["context_from"] * bucket["context_to"]) for bucket in buckets]
        losses = [statistics.fmean(p["context_buckets"][i]["loss"] for p in largest) for i in range(len(buckets))]
        context_axis.plot(centres, losses, **{**style, "label": f"{entry['label']}, N = {format_value(counts[-1])}"})
    axis.set(xscale="log", yscale="log", xlabel="non-embedding parameters", ylabel="test bits per byte")
    axis.set_title(f"{results['settings']['budget']} token budget; dashed: {results['fit_form']}", fontsize="medium")
    axis.yaxis.set_major_formatter(ScalarFormatter())
    axis.yaxis.set_minor_formatter(ScalarFormatter())
    context_axis.set(xlabel="tokens of context before the predicted token", ylabel="test loss (nats per token)")
    context_axis.set_title("the largest model of each line, mean over seeds", fontsize="medium")
    log2_axis(context_axis, [2**power for power in range(results["settings"]["block_size"].bit_length())])
    for each in (axis, context_axis):
        each.grid(True, which="both", alpha=0.3)
        if each.has_data():
            each.legend(fontsize="small")
    return [save_figure(figure, run_dir / PLOTS[0]).name, save_figure(context_figure, run_dir / PLOTS[1]).name]


OPTIONS = {  # the budget options: type (None: text) and help; each preset's value is added to the help
    "sizes": (None, "transformer shapes WIDTHxLAYERS[xHEADS], at least 5 spanning 30x in parameters"),
    "lstm_depths": (None, "LSTM layers, one line each"),
    "seeds": (parse_seeds, "seeds per point: a count from --seed up, or a list; at least 2"),
    "budget": (None, "tokens per point: --tokens (fixed), or --tokens-per-parameter x N (proportional)"),
    "tokens": (int, "training tokens per point, fixed budget"),
    "tokens_per_parameter": (float, "training tokens per non-embedding parameter, proportional budget"),
    "block_size": (int, "tokens per sequence: the longest context"),
    "batch_size": (int, "sequences per step"),
    "vocab_size": (int, "vocabulary of the tokenizer the run trains"),
    "eval_blocks": (int, "test blocks scored, the first of the split"),
    "fit": (None, " or ".join(FIT_FORMS.values())),
    "max_minutes": (float, "start no point that would end later; --resume continues"),
}
CHOICES = {"budget": ("fixed", "proportional"), "fit": tuple(FIT_FORMS)}


def add_parser(subcommands) -> None:
    scaling = subcommands.add_parser(
        "scaling",
        help="test loss against parameters for each family, with power-law fits and crossings (Kaplan Fig. 7)",
        description="Kaplan et al. 2020, Fig. 7: every family (and the LSTM at 1, 2 and 4 layers) trained at each of "
        "--sizes, matched in non-embedding parameters to GPT-2 at that shape, on the same data and tokenizer, with "
        "several seeds. AdamW at each family's registry learning rate times Kaplan's LR(N) ratio to compare's default "
        "size. Writes every point to results.json as it finishes, a power-law fit of test bits per byte against "
        "parameters per line with alpha's 95% interval over seeds, the sizes where lines cross, scaling.png and "
        "scaling-context.png (the per-position loss of the largest models, Fig. 7 right).",
    )
    add_common_options(scaling, "scaling", PRESETS, ",".join(DEFAULT_LINE))
    for action in scaling._actions:  # the other probes' --model and --size: here fresh models at --sizes
        if action.dest in ("model", "size"):
            action.help = argparse.SUPPRESS
    add_text_options(scaling)
    budget = scaling.add_argument_group("sizes and budget")
    for key, (kind, text) in OPTIONS.items():
        budget.add_argument(
            f"--{key.replace('_', '-')}", type=kind, choices=CHOICES.get(key), help=preset_help(PRESETS, key, text)
        )
    budget.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --output with its settings, skipping finished points",
    )
    scaling.set_defaults(run=run)
