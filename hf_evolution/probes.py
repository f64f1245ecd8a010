"""`hf-evolution probe`: measure the claims of the RNN -> Transformer story on the models you train.

Every account of this history says that vanilla RNNs lose gradients and memories over distance, that LSTM and GRU
gates fix much of that, that RNNs are slow because they are sequential, and that Transformers parallelise but pay a
memory cost growing with the context. Each probe measures one of these claims, for fresh models at matched sizes
(`--models rnn,lstm,gru,gpt2 --size small`) and for checkpoint folders (`--model FOLDER`):

- `gradients`: the norm of d loss(t) / d h(t - k) against the distance k, before and after a short training, and the
  gradient norm of each layer during that training;
- `memory`: synthetic long-range tasks (copy after a delay, the adding problem, multi-query associative recall), each
  trained from scratch for a fixed budget at several distances: accuracy against distance;
- `speed`: training-step and forward time against sequence length; generation time per token and cache bytes against
  context length;
- `context`: the loss on each token against how many tokens precede it, for trained language models.

Each writes `results.json` (updated after every model, so an interrupted run keeps what finished) and PNG plots into
its run folder, and prints a table.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from .families import (
    MODEL_FAMILIES,
    RECURRENT_FAMILIES,
    SIZES,
    TASKS,
    build_model,
    build_model_for_vocab,
    check_family,
    matched_config,
    parameter_counts,
    prepare_model,
)
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

DEFAULT_FAMILIES = ("rnn", "lstm", "gru", "gpt2")
IGNORE_INDEX = -100  # targets that are not scored, as in transformers' losses
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")

# Budgets of each probe. `default` is what the documented runs use (about 10 minutes for `memory` on a 2-core CPU);
# `smoke` runs in seconds, for tests and for checking a setup. An option given on the command line wins.
PRESETS = {
    "gradients": {
        "default": dict(size="small", length=256, steps=200, batch_size=16, samples=64, lr=1e-3, log_every=10),
        "smoke": dict(size="tiny", length=32, steps=8, batch_size=4, samples=4, lr=1e-3, log_every=2),
    },
    "memory": {
        "default": dict(
            size="tiny",
            tasks="copy,adding,mqar",
            distances="16,32,64,128,256",
            steps=400,
            batch_size=32,
            lr=3e-3,
            eval_size=1024,
        ),
        "smoke": dict(
            size="tiny", tasks="copy,adding,mqar", distances="2,8", steps=300, batch_size=32, lr=1e-2, eval_size=256
        ),
    },
    "speed": {
        "default": dict(
            size="small",
            lengths="64,128,256,512,1024,2048",
            contexts="64,128,256,512,1024,2048,4096",
            batch_size=8,
            new_tokens=32,
            repeats=3,
            vocab_size=8192,
        ),
        "smoke": dict(
            size="tiny", lengths="16,32", contexts="16,64", batch_size=2, new_tokens=4, repeats=1, vocab_size=320
        ),
    },
    "context": {
        "default": dict(size="small", block_size=512, max_blocks=None, batch_size=8),
        "smoke": dict(size="tiny", block_size=32, max_blocks=8, batch_size=4),
    },
}


# Models: fresh families at a preset size, or checkpoint folders.


@dataclass
class ModelSpec:
    """One model to probe: a family at a preset size with fresh weights, or a checkpoint folder."""

    name: str  # label in tables, plots and results.json
    family: str  # the config's model_type: picks the colour
    size: str | None = None
    path: Path | None = None

    @property
    def source(self) -> str:
        return str(self.path) if self.path is not None else f"fresh weights, size {self.size!r}"

    def config(self) -> PreTrainedConfig:
        """The folder's config, or the family's default config (enough to tell what kind of model it is)."""
        return folder_config(self.path) if self.path is not None else AutoConfig.for_model(self.family)


def split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def split_ints(text: str, option: str) -> list[int]:
    try:
        values = [int(item) for item in split_list(text)]
    except ValueError:
        raise ValueError(f"{option} takes comma-separated whole numbers, e.g. 16,32,64; got {text!r}.") from None
    if not values or min(values) < 1:
        raise ValueError(f"{option} takes positive whole numbers, got {text!r}.")
    return sorted(set(values))


def folder_config(path: Path) -> PreTrainedConfig:
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a model folder: it has no config.json (write one with model.save_pretrained(folder))."
        )
    return AutoConfig.from_pretrained(path)


def model_specs(args, default_families: tuple[str, ...] = DEFAULT_FAMILIES) -> list[ModelSpec]:
    """The models of `--models` (fresh, at `--size`) and `--model` (folders); the default families if neither."""
    folders = args.model or []
    families = split_list(args.models) if args.models else ([] if folders else list(default_families))
    if not families and not folders:
        raise ValueError("Nothing to probe: give --model FOLDER (repeatable) and/or --models FAMILIES.")
    specs = []
    for family in families:
        check_family(family)
        specs.append(ModelSpec(family, family, size=args.size))
    for folder in folders:
        config = folder_config(folder)
        specs.append(ModelSpec(folder.resolve().name, config.model_type, path=folder))
    names = [spec.name for spec in specs]
    for spec in specs:
        if names.count(spec.name) > 1 and spec.path is not None:
            spec.name = str(spec.path)  # two folders of the same name: tell them apart by their paths
    names = [spec.name for spec in specs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{', '.join(repeated)} given more than once; list each model once.")
    return specs


def causal_lm_problem(config: PreTrainedConfig) -> str | None:
    """Why a model of `config` cannot predict the next token from the past alone, or None if it can."""
    if getattr(config, "bidirectional", False):
        return "it is bidirectional: its backward direction reads the tokens after each position."
    if config.model_type in RECURRENT_FAMILIES:
        return None
    if getattr(config, "is_encoder_decoder", False):
        return f"{config.model_type} is an encoder-decoder model, not a decoder-only language model."
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        return (
            f"{config.model_type} is a bidirectional encoder: every position attends to the tokens after it, so the "
            "loss at t is not a next-token loss, the gradient at t - k mixes past and future, and nothing can be "
            "cached for generation."
        )
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return f"transformers has no causal language model for model_type {config.model_type!r}."
    return None


def lm_head_problem(config: PreTrainedConfig) -> str | None:
    """Why a checkpoint's weights hold no trained language-model head, or None if they do (or cannot tell)."""
    architectures = getattr(config, "architectures", None) or []
    if architectures and not any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in architectures):
        return (
            f"the folder holds a {architectures[0]}, which has no language-model head, and this probe reads a "
            "trained next-token loss."
        )
    return None


def require_causal_lms(specs: list[ModelSpec], probe: str, weights: bool) -> None:
    """Refuse, before any work, a model that cannot run `probe`; with `weights`, a folder must hold a trained LM."""
    for spec in specs:
        config = spec.config()
        problem = causal_lm_problem(config)
        if problem is None and weights and spec.path is not None:
            problem = lm_head_problem(config)
        if problem is not None:
            raise ValueError(f"probe {probe} needs a causal language model, and {spec.name} cannot be one: {problem}")


def require_tokenizers(specs: list[ModelSpec]) -> None:
    """Refuse, before any work, a folder without the tokenizer that the probe needs to turn text into its tokens."""
    for spec in specs:
        if spec.path is not None and not any((spec.path / name).exists() for name in TOKENIZER_FILES):
            raise FileNotFoundError(
                f"{spec.path} has no tokenizer, and this probe tokenizes text for it. Save the tokenizer the model was "
                "trained with into the folder: tokenizer.save_pretrained(folder)."
            )


def fresh_position_fields(family: str, size: str, length: int) -> dict:
    """Config fields that give a fresh transformer learned positions for `length` tokens (tiny has only 256)."""
    positions = max(SIZES[size].max_positions, length)
    return {"gpt2": {"n_positions": positions}, "bert": {"max_position_embeddings": positions}}.get(family, {})


def load_language_model(spec: ModelSpec, fresh_tokenizer, seed: int, length: int) -> tuple[PreTrainedModel, object]:
    """A causal LM and its tokenizer: fresh weights (positions for `length` tokens) with the shared tokenizer, or a
    folder's model and tokenizer."""
    from .tokenization import load_tokenizer

    if spec.path is None:
        fields = fresh_position_fields(spec.family, spec.size, length)
        return build_model(spec.family, "lm", spec.size, fresh_tokenizer, seed=seed, **fields), fresh_tokenizer
    tokenizer = load_tokenizer(spec.path)
    model = prepare_model(AutoModelForCausalLM.from_pretrained(spec.path))
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(
            f"The tokenizer in {spec.path} has {len(tokenizer)} tokens but the model only {model.config.vocab_size}; "
            "save the tokenizer the model was trained with."
        )
    return model, tokenizer


def shared_tokenizer(args, specs: list[ModelSpec], corpus):
    """The tokenizer of the fresh models: `--tokenizer`, or a byte-level BPE trained on the train split."""
    from .tokenization import load_tokenizer, train_tokenizer

    if all(spec.path is not None for spec in specs):
        return None
    if args.tokenizer:
        return load_tokenizer(args.tokenizer)
    return train_tokenizer(corpus["train"], "bpe")


def position_limit(config: PreTrainedConfig) -> int | None:
    """Longest sequence a model with learned positions accepts; None for recurrent models, which have no limit."""
    return getattr(config, "max_position_embeddings", None)


def describe(spec: ModelSpec, model: PreTrainedModel) -> dict:
    config = model.config.to_diff_dict()
    for name in ("id2label", "label2id"):  # a token classifier over a vocabulary would list every token
        config.pop(name, None)
    return {"source": spec.source, "family": spec.family, "parameters": parameter_counts(model), "config": config}


def line_styles(models: dict) -> dict[str, dict]:
    """Plot keywords per model: the family's colour in every plot; a second model of a family gets another dash."""
    dashes = ("-", "--", ":", "-.")
    styles, per_family = {}, {}
    for name, entry in models.items():
        index = per_family.get(entry["family"], 0)
        per_family[entry["family"]] = index + 1
        color = FAMILY_COLORS.get(entry["family"], "#7f7f7f")
        styles[name] = {"color": color, "linestyle": dashes[index % len(dashes)], "label": name}
    return styles


def log2_axis(axis, points: list[int]) -> None:
    """A base-2 logarithmic x axis labelled at `points`: doublings read better than powers of ten here."""
    axis.set_xscale("log", base=2)
    axis.set_xticks(points, labels=[str(point) for point in points])
    axis.minorticks_off()


# Run folders and results.


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device here; use --device cpu.")
    return torch.device(name)


def apply_preset(args, probe: str) -> None:
    """Fill the preset's budget into the options not given on the command line."""
    for key, value in PRESETS[probe][args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def start_run(args, probe: str, units: dict) -> tuple[Path, dict]:
    """Create the run folder (refusing one that holds a run) and the skeleton of results.json."""
    run_dir = prepare_output_dir(args.output or default_run_dir(f"probe-{probe}"), overwrite=args.overwrite)
    settings = {key: value for key, value in vars(args).items() if key not in ("run", "command", "probe")}
    results = {
        "probe": probe,
        "seed": args.seed,
        "settings": settings,
        "units": units,
        "environment": environment(),
        "models": {},
    }
    return run_dir, results


def save_results(run_dir: Path, results: dict, plot: Callable[[Path, dict], list[str]]) -> None:
    results["plots"] = plot(run_dir, results)
    write_json(run_dir / "results.json", results)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Fastest of `repeats` calls after one warm-up, in seconds: on a shared machine noise only ever adds time."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def lm_blocks(dataset, tokenizer, block_size: int, max_blocks: int | None = None) -> torch.Tensor:
    """(blocks, block_size) token ids of the text, packed as for language-model training."""
    from .data import pack_for_lm

    blocks = pack_for_lm(dataset, tokenizer, block_size)
    if max_blocks is not None:
        blocks = blocks.select(range(min(max_blocks, len(blocks))))
    return blocks.with_format("torch")[:]["input_ids"]


def load_text_corpus(name: str):
    from .data import load_corpus

    return load_corpus(name)


# probe gradients


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


def run_gradients(args) -> int:
    apply_preset(args, "gradients")
    specs = model_specs(args)
    require_causal_lms(specs, "gradients", weights=False)
    require_tokenizers(specs)
    device = resolve_device(args.device)
    units = {
        "curves": "list index = distance k in tokens; value = mean over the samples of the L2 norm of "
        "d loss(t) / d h_l(t - k), loss(t) = cross-entropy (nats) of the token that follows the `length` tokens; "
        "h0 = embeddings (the input of layer 1), h<l> = output of layer l (the input of layer l + 1)",
        "training_log": "loss in nats per token; grad_norm = L2 norm of each parameter group's gradient, before "
        "clipping to 1",
    }
    run_dir, results = start_run(args, "gradients", units)
    corpus = load_text_corpus(args.dataset)
    tokenizer = shared_tokenizer(args, specs, corpus)
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
            entry["training_log"] = train_logging_gradients(model, train_blocks, args, device, f"{spec.name} training")
            entry["after_training"] = gradient_curves(model, samples, device)
        results["models"][spec.name] = entry
        save_results(run_dir, results, plot_gradients)
    print(gradients_table(results, args.length))
    print(f"\nResults and plots in {run_dir}")
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
    files = [save_figure(figure, run_dir / "gradients.png").name]

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
        files.append(save_figure(figure, run_dir / "gradients-layers.png").name)
    return files


# probe memory: synthetic long-range tasks, trained from scratch at each distance


@dataclass(frozen=True)
class SyntheticTask:
    """A long-range task: `make_batch(batch_size, distance, generator)` returns (inputs, targets) token ids, the
    targets IGNORE_INDEX except where an answer is due."""

    make_batch: Callable[[int, int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    vocab_size: int
    chance: float  # accuracy of the best answer that ignores the input
    distance: str  # what the distance counts in this task
    min_distance: int = 1


COPY_SYMBOLS, COPY_LENGTH = 8, 4
MQAR_KEYS, MQAR_VALUES, MQAR_PAIRS = 16, 16, 4


def copy_batch(batch_size: int, distance: int, generator: torch.Generator):
    """Copy after a delay (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016): 4 symbols out of 8, blanks, a go
    marker `distance` tokens after the last symbol; from the go marker on, the 4 symbols are due in order, one per
    position (the inputs there are blanks). Symbols are tokens 0-7, blank 8, go 9."""
    blank, go = COPY_SYMBOLS, COPY_SYMBOLS + 1
    symbols = torch.randint(COPY_SYMBOLS, (batch_size, COPY_LENGTH), generator=generator)
    go_position = COPY_LENGTH - 1 + distance
    inputs = torch.full((batch_size, go_position + COPY_LENGTH), blank)
    inputs[:, :COPY_LENGTH] = symbols
    inputs[:, go_position] = go
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets[:, go_position:] = symbols
    return inputs, targets


def adding_batch(batch_size: int, distance: int, generator: torch.Generator):
    """The adding problem (Hochreiter & Schmidhuber 1997) with digits: `distance` random digits, one marked in each
    half, then "=", where the sum of the two marked digits is due. Digit d is token d, a marked digit 10 + d, "=" is
    token 20; the sum s (0-18) is answered as token s."""
    digits = torch.randint(10, (batch_size, distance), generator=generator)
    half = distance // 2
    first = torch.randint(half, (batch_size,), generator=generator)
    second = torch.randint(half, distance, (batch_size,), generator=generator)
    rows = torch.arange(batch_size)
    inputs = torch.cat([digits, torch.full((batch_size, 1), 20)], dim=1)
    inputs[rows, first] += 10
    inputs[rows, second] += 10
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets[:, -1] = digits[rows, first] + digits[rows, second]
    return inputs, targets


def mqar_batch(batch_size: int, distance: int, generator: torch.Generator):
    """Multi-query associative recall (Zoology, Arora et al. 2023): 4 key-value pairs, blanks, then the 4 keys again
    in a random order, the first one `distance` tokens after the last pair; each key's value is due at its query.
    Keys are tokens 0-15 (distinct within a sequence), values 16-31, blank 32."""
    blank = MQAR_KEYS + MQAR_VALUES
    keys = torch.rand(batch_size, MQAR_KEYS, generator=generator).argsort(dim=1)[:, :MQAR_PAIRS]
    values = torch.randint(MQAR_KEYS, blank, (batch_size, MQAR_PAIRS), generator=generator)
    order = torch.rand(batch_size, MQAR_PAIRS, generator=generator).argsort(dim=1)
    first_query = 2 * MQAR_PAIRS - 1 + distance
    inputs = torch.full((batch_size, first_query + MQAR_PAIRS), blank)
    inputs[:, 0 : 2 * MQAR_PAIRS : 2] = keys
    inputs[:, 1 : 2 * MQAR_PAIRS : 2] = values
    inputs[:, first_query:] = keys.gather(1, order)
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets[:, first_query:] = values.gather(1, order)
    return inputs, targets


SYNTHETIC_TASKS = {
    "copy": SyntheticTask(
        copy_batch, COPY_SYMBOLS + 2, 1 / COPY_SYMBOLS, "tokens from the last symbol to the go marker"
    ),
    "adding": SyntheticTask(
        adding_batch, 21, 0.1, "number of digits (one marked digit in each half); chance = always answering 9", 2
    ),
    "mqar": SyntheticTask(
        mqar_batch,
        MQAR_KEYS + MQAR_VALUES + 1,
        1 / MQAR_VALUES,
        "tokens from the last key-value pair to the first query",
    ),
}


def synthetic_config(spec: ModelSpec, vocab_size: int) -> PreTrainedConfig:
    """The architecture to train on a task: the family at `--size` (parameter-matched), or a folder's config with
    the task's vocabulary (its weights are not used); dropout off, since the tasks have no noise to regularise."""
    if spec.path is None:
        config = matched_config(spec.family, spec.size, vocab_size)
    else:
        config = spec.config()
        config.vocab_size = vocab_size
        config.pad_token_id = config.bos_token_id = config.eos_token_id = None
    for name, value in list(vars(config).items()):
        if ("dropout" in name or "pdrop" in name) and isinstance(value, float):
            setattr(config, name, 0.0)
    return config


def synthetic_model(config: PreTrainedConfig, length: int, seed: int) -> PreTrainedModel:
    """A fresh model of `config` for sequences of `length`: causal models predict with their LM head; a bidirectional
    encoder (BERT) reads the whole sequence and predicts at every position with a token classifier."""
    config = config.__class__.from_dict(config.to_dict())
    limit = position_limit(config)
    if limit is not None and limit < length:
        config.max_position_embeddings = length
    task = "lm"
    if causal_lm_problem(config) is not None:
        task = "tokens"
        config.num_labels = config.vocab_size
    torch.manual_seed(seed)
    return prepare_model(TASKS[task].from_config(config))


def train_on_task(model, task: SyntheticTask, distance: int, args, device: torch.device, desc: str) -> dict:
    """Train for the budget (`steps` batches of `batch_size`) with AdamW, then score fresh sequences. Every model
    sees the same batches: the data generator restarts from the seed."""
    generator = torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    model.train()
    start = time.perf_counter()
    for _ in tqdm(range(args.steps), desc=desc, leave=False):
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


def run_memory(args) -> int:
    apply_preset(args, "memory")
    specs = model_specs(args)
    device = resolve_device(args.device)
    units = {
        "accuracy": "fraction of the answers due that are predicted exactly, on `eval_size` fresh sequences",
        "distance": "per task, see `tasks`",
        "final_loss": "cross-entropy in nats on the answers of the last training batch",
        "train_seconds": "seconds of training at that distance",
    }
    run_dir, results = start_run(args, "memory", units)
    task_names = split_list(args.tasks)
    for name in task_names:
        if name not in SYNTHETIC_TASKS:
            raise ValueError(f"Unknown task {name!r}; choose among {', '.join(SYNTHETIC_TASKS)}.")
    distances = split_ints(args.distances, "--distances")
    for name in task_names:
        task = SYNTHETIC_TASKS[name]
        if distances[0] < task.min_distance:
            raise ValueError(f"The {name} task needs distances of at least {task.min_distance} ({task.distance}).")
    results["tasks"] = {
        name: {"chance": SYNTHETIC_TASKS[name].chance, "distance": SYNTHETIC_TASKS[name].distance}
        for name in task_names
    }
    for spec in specs:
        entry = {"source": spec.source, "family": spec.family, "tasks": {}}
        results["models"][spec.name] = entry
        for name in task_names:
            task = SYNTHETIC_TASKS[name]
            config = synthetic_config(spec, task.vocab_size)
            task_entry = entry["tasks"][name] = {"accuracy": {}, "final_loss": {}, "train_seconds": {}}
            for distance in distances:
                length = task.make_batch(1, distance, torch.Generator())[0].shape[1]
                model = synthetic_model(config, length, args.seed).to(device)
                if "parameters" not in task_entry:
                    task_entry.update(parameters=parameter_counts(model), config=describe(spec, model)["config"])
                outcome = train_on_task(model, task, distance, args, device, f"{spec.name} {name} d={distance}")
                for key, value in outcome.items():
                    task_entry[key][str(distance)] = value
                save_results(run_dir, results, plot_memory)
    print(memory_table(results, distances))
    print(f"\nResults and plots in {run_dir}")
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
    return [save_figure(figure, run_dir / "memory.png").name]


# probe speed


def cache_bytes(cache) -> int:
    """Bytes of every tensor a cache holds: keys and values of attention layers, states of recurrent layers."""
    tensors = {}
    for layer in cache.layers:
        for value in vars(layer).values():
            items = (
                value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
            )
            tensors.update({id(item): item for item in items if isinstance(item, torch.Tensor)})
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())


def speed_model(spec: ModelSpec, args, longest: int) -> PreTrainedModel:
    """A folder's model as saved, or a fresh one over a vocabulary of `--vocab-size` with positions for `longest`
    tokens; BERT as a token classifier over the vocabulary (an output layer as large as an LM head)."""
    if spec.path is not None:
        return prepare_model(AutoModelForCausalLM.from_pretrained(spec.path))
    fields = fresh_position_fields(spec.family, spec.size, longest)
    task = "lm"
    if causal_lm_problem(spec.config()) is not None:
        task, fields["num_labels"] = "tokens", args.vocab_size
    return build_model_for_vocab(spec.family, task, spec.size, args.vocab_size, seed=args.seed, **fields)


@torch.no_grad()
def forward_pass(model, input_ids: torch.Tensor) -> None:
    model(input_ids=input_ids, use_cache=False)


def training_step(model, optimizer, input_ids: torch.Tensor) -> None:
    model(input_ids=input_ids, labels=input_ids, use_cache=False).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def time_lengths(model, lengths: list[int], args, device: torch.device, desc: str) -> dict:
    """Milliseconds of a forward pass (no gradients) and of a training step (forward, backward, AdamW step) on a
    batch of random tokens, at each sequence length."""
    limit = position_limit(model.config)
    generator = torch.Generator().manual_seed(args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    timings = {}
    for length in tqdm(lengths, desc=desc, leave=False):
        if limit is not None and length > limit:
            timings[str(length)] = None  # beyond the learned positions
            continue
        input_ids = torch.randint(model.config.vocab_size, (args.batch_size, length), generator=generator).to(device)

        model.eval()
        forward_seconds = best_time(partial(forward_pass, model, input_ids), args.repeats, device)
        model.train()
        train_seconds = best_time(partial(training_step, model, optimizer, input_ids), args.repeats, device)
        timings[str(length)] = {
            "forward_ms": 1000 * forward_seconds,
            "train_step_ms": 1000 * train_seconds,
            "train_tokens_per_s": args.batch_size * length / train_seconds,
        }
    model.eval()
    return timings


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
            sync(device)
            start = time.perf_counter()
            for _ in range(args.new_tokens):
                output = model(input_ids=next_ids, cache=cache, use_cache=True)
                next_ids = output.logits[:, -1:].argmax(dim=-1)
            sync(device)
            seconds.append(time.perf_counter() - start)
        timings[str(context)] = {
            "ms_per_token": 1000 * min(seconds[1:]) / args.new_tokens,
            "cache_bytes": prompt_cache_bytes,
        }
    return timings


def run_speed(args) -> int:
    apply_preset(args, "speed")
    specs = model_specs(args)
    for spec in specs:
        if spec.path is not None:
            require_causal_lms([spec], "speed", weights=False)
    device = resolve_device(args.device)
    units = {
        "forward_ms": "milliseconds per forward pass without gradients, batch of `batch_size` sequences",
        "train_step_ms": "milliseconds per training step (forward, backward, AdamW step), same batch",
        "train_tokens_per_s": "tokens per second in training",
        "ms_per_token": "milliseconds per generated token (greedy, batch 1, with the cache), after the prompt",
        "cache_bytes": "bytes of the tensors in the cache after a prompt of `context` tokens",
        "times": "fastest of `repeats` runs after a warm-up; null: longer than the model's learned positions",
    }
    run_dir, results = start_run(args, "speed", units)
    lengths, contexts = split_ints(args.lengths, "--lengths"), split_ints(args.contexts, "--contexts")
    for spec in specs:
        model = speed_model(spec, args, max(lengths[-1], contexts[-1] + args.new_tokens)).to(device)
        entry = describe(spec, model)
        entry["load_average_before"] = os.getloadavg()
        entry["lengths"] = time_lengths(model, lengths, args, device, f"{spec.name} lengths")
        problem = causal_lm_problem(model.config)
        if problem is None:
            entry["generation"] = time_generation(model, contexts, args, device, f"{spec.name} generation")
        else:
            entry["generation_skipped"] = f"no generation: {problem}"
            print(f"{spec.name}: {entry['generation_skipped']}", file=sys.stderr)
        entry["load_average_after"] = os.getloadavg()
        results["models"][spec.name] = entry
        save_results(run_dir, results, plot_speed)
    print(speed_tables(results, lengths, contexts))
    print(f"\nResults and plots in {run_dir}")
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
        "speed-time.png": (
            ("lengths", "train_step_ms", "training step (ms)", "sequence length (tokens)", "log"),
            ("lengths", "forward_ms", "forward pass (ms)", "sequence length (tokens)", "log"),
        ),
        "speed-generation.png": (  # per-token times vary by a few times at most: a linear axis shows them better
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


# probe context


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
    return {
        "loss_at_context_1": first,
        "loss_at_longest": buckets[-1]["loss"],
        "gain": gain,
        "context_for_90_percent_of_gain": reached,
    }


def run_context(args) -> int:
    apply_preset(args, "context")
    specs = model_specs(args, default_families=())
    require_causal_lms(specs, "context", weights=True)
    require_tokenizers(specs)
    device = resolve_device(args.device)
    units = {
        "loss_by_context": "list index i = loss (nats) of a token predicted from the i + 1 tokens before it, mean "
        "over the blocks",
        "buckets": "mean loss over contexts context_from..context_to",
        "summary": "gain = loss at context 1 minus the lowest bucket loss; context_for_90_percent_of_gain = the "
        "shortest bucket whose loss is within 10% of that gain from the lowest",
    }
    run_dir, results = start_run(args, "context", units)
    corpus = load_text_corpus(args.dataset)
    tokenizer = shared_tokenizer(args, specs, corpus)
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
        save_results(run_dir, results, plot_context)
    rows = [{"model": name, **entry["summary"]} for name, entry in results["models"].items()]
    columns = {
        "model": "model",
        "loss_at_context_1": "loss, 1 token of context",
        "loss_at_longest": "loss, longest contexts",
        "gain": "gain (nats)",
        "context_for_90_percent_of_gain": "context for 90% of the gain",
    }
    print(f"Loss (nats per token) by context on the {args.split} split:\n" + markdown_table(rows, columns))
    print(f"\nResults and plots in {run_dir}")
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
    return [save_figure(figure, run_dir / "context.png").name]


# The command line


def preset_help(probe: str, key: str, text: str) -> str:
    default, smoke = PRESETS[probe]["default"][key], PRESETS[probe]["smoke"][key]
    return f"{text} (default: {default}; --preset smoke: {smoke})"


def add_common_options(parser: argparse.ArgumentParser, probe: str, default_families: str) -> None:
    models = parser.add_argument_group("models")
    models.add_argument(
        "--models",
        metavar="FAMILIES",
        help=f"comma-separated families to build with fresh weights at --size, parameter-matched: any of "
        f"{','.join(MODEL_FAMILIES)} (default: {default_families})",
    )
    models.add_argument(
        "--model",
        type=Path,
        action="append",
        metavar="FOLDER",
        help="a checkpoint folder: one of ours or any causal LM saved with save_pretrained; repeatable",
    )
    models.add_argument("--size", choices=list(SIZES), help=preset_help(probe, "size", "size of the fresh models"))
    run = parser.add_argument_group("run")
    run.add_argument(
        "--preset",
        choices=("default", "smoke"),
        default="default",
        help="budget: 'default' for measurements, 'smoke' to check a setup in seconds (default: default)",
    )
    run.add_argument("--output", type=Path, metavar="DIR", help=f"run folder (default: runs/probe-{probe}-<time>)")
    run.add_argument("--overwrite", action="store_true", help="replace a run folder that already holds results")
    run.add_argument("--seed", type=int, default=0, help="seed of weights and data (default: 0)")
    run.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run (default: cuda if present)"
    )


def add_text_options(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("text")
    data.add_argument(
        "--dataset",
        default="bbc-news",
        help="corpus for load_corpus: bbc-news (embedded), a .txt/.csv/.json file or a Hub id (default: bbc-news)",
    )
    data.add_argument(
        "--tokenizer",
        metavar="FOLDER",
        help="tokenizer of the fresh models (default: a byte-level BPE trained on the train split); checkpoint "
        "folders always use their own",
    )


def add_parser(subcommands) -> None:
    parser = subcommands.add_parser(
        "probe",
        help="measure gradients through time, memory, speed and context use",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    probes = parser.add_subparsers(dest="probe", required=True, metavar="{gradients,memory,speed,context}")

    gradients = probes.add_parser(
        "gradients",
        help="gradient norm against distance (vanishing gradients), and per-layer gradient norms in training",
        description="Norm of d loss(t) / d h(t - k) against the distance k, for text of the corpus's validation "
        "split, before and after a short training (AdamW, gradients clipped to 1) on its train split, and the "
        "gradient norm of each layer during that training. h is read through output_hidden_states, so recurrent "
        "and attention models are measured alike. Needs causal models: a bidirectional one's loss at t depends "
        "on the tokens after t.",
    )
    add_common_options(gradients, "gradients", ",".join(DEFAULT_FAMILIES) + " unless --model is given")
    add_text_options(gradients)
    budget = gradients.add_argument_group("budget")
    budget.add_argument(
        "--length", type=int, help=preset_help("gradients", "length", "tokens before the predicted one")
    )
    budget.add_argument("--samples", type=int, help=preset_help("gradients", "samples", "sequences measured"))
    budget.add_argument("--steps", type=int, help=preset_help("gradients", "steps", "training steps; 0: no training"))
    budget.add_argument("--batch-size", type=int, help=preset_help("gradients", "batch_size", "training batch"))
    budget.add_argument("--lr", type=float, help=preset_help("gradients", "lr", "AdamW learning rate"))
    budget.add_argument(
        "--log-every", type=int, help=preset_help("gradients", "log_every", "steps between gradient-norm logs")
    )
    gradients.set_defaults(run=run_gradients)

    memory = probes.add_parser(
        "memory",
        help="accuracy against distance on copy, adding and associative-recall tasks",
        description="Synthetic long-range tasks generated on the fly from the seed: copy after a delay, the adding "
        "problem (Hochreiter & Schmidhuber 1997) and multi-query associative recall (Zoology, Arora et al. 2023). "
        "Each model is trained from scratch (AdamW, gradients clipped to 1, dropout off) for the same budget of "
        "steps x batch at each distance and scored on fresh sequences: accuracy against distance, with chance "
        "drawn. A --model folder gives its architecture; its weights are not used. The default budget takes "
        "about 10 minutes on a 2-core CPU.",
    )
    add_common_options(memory, "memory", ",".join(DEFAULT_FAMILIES) + " unless --model is given")
    budget = memory.add_argument_group("tasks and budget")
    budget.add_argument(
        "--tasks", help=preset_help("memory", "tasks", f"comma-separated, among {','.join(SYNTHETIC_TASKS)}")
    )
    budget.add_argument("--distances", help=preset_help("memory", "distances", "comma-separated distances"))
    budget.add_argument("--steps", type=int, help=preset_help("memory", "steps", "training steps per distance"))
    budget.add_argument("--batch-size", type=int, help=preset_help("memory", "batch_size", "sequences per step"))
    budget.add_argument("--lr", type=float, help=preset_help("memory", "lr", "AdamW learning rate"))
    budget.add_argument("--eval-size", type=int, help=preset_help("memory", "eval_size", "fresh sequences scored"))
    memory.set_defaults(run=run_memory)

    speed = probes.add_parser(
        "speed",
        help="training/forward time against length, generation time and cache bytes against context",
        description="Training-step time (forward, backward, AdamW) and forward time against sequence length on "
        "random tokens, then greedy generation with the cache after prompts of growing length: milliseconds "
        "per token and the bytes of the cache's tensors (a recurrent state is fixed; attention keys and values "
        "grow with the context). Times are the fastest of --repeats after a warm-up; the load average of the "
        "machine is recorded, since other work on it slows every figure. BERT is timed but cannot generate.",
    )
    add_common_options(speed, "speed", ",".join(DEFAULT_FAMILIES) + " unless --model is given")
    budget = speed.add_argument_group("measurements")
    budget.add_argument("--lengths", help=preset_help("speed", "lengths", "sequence lengths of the timings"))
    budget.add_argument("--contexts", help=preset_help("speed", "contexts", "prompt lengths before generating"))
    budget.add_argument("--batch-size", type=int, help=preset_help("speed", "batch_size", "sequences per batch"))
    budget.add_argument("--new-tokens", type=int, help=preset_help("speed", "new_tokens", "tokens generated"))
    budget.add_argument("--repeats", type=int, help=preset_help("speed", "repeats", "timed runs, the fastest kept"))
    budget.add_argument(
        "--vocab-size", type=int, help=preset_help("speed", "vocab_size", "vocabulary of the fresh models")
    )
    speed.set_defaults(run=run_speed)

    context = probes.add_parser(
        "context",
        help="loss against how many tokens of context precede each token (trained LMs)",
        description="For trained language models: the text of a split is cut into blocks, each read from "
        "nothing, and the loss of every token is averaged by its position, i.e. by how many tokens of context "
        "the model had. The curve flattens where a model stops using more context. Give --model folders that hold "
        "the model and its tokenizer; fresh --models only give an untrained baseline.",
    )
    add_common_options(context, "context", "none: give --model FOLDER")
    add_text_options(context)
    budget = context.add_argument_group("measurement")
    budget.add_argument(
        "--split", choices=("train", "validation", "test"), default="validation", help="(default: validation)"
    )
    budget.add_argument(
        "--block-size", type=int, help=preset_help("context", "block_size", "tokens per block: the longest context")
    )
    budget.add_argument("--max-blocks", type=int, help=preset_help("context", "max_blocks", "blocks read (None: all)"))
    budget.add_argument("--batch-size", type=int, help=preset_help("context", "batch_size", "blocks per batch"))
    context.set_defaults(run=run_context)
