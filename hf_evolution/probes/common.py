"""What the probes share: the models to probe (fresh families or checkpoint folders), the checks that refuse a model
before any work, the run folder and results.json, and plot styles."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from ..families import (
    CAUSAL_FAMILIES,
    RECURRENT_FAMILIES,
    build_model,
    family_color,
    folder_config,
    parameter_counts,
    prepare_model,
    requested_models,
)
from ..runs import RunFolder, default_run_dir, environment, open_run_folder, write_json

DEFAULT_FAMILIES = CAUSAL_FAMILIES  # the line, from the RNN to Mamba


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


def model_specs(args, default_families: tuple[str, ...] = DEFAULT_FAMILIES) -> list[ModelSpec]:
    """The models of `--models` (fresh, at `--size`) and `--model` (folders); the default families if neither."""
    folders = args.model or []
    families = requested_models(args.models) if args.models else ([] if folders else list(default_families))
    if not families and not folders:
        raise ValueError("Nothing to probe: give --model FOLDER (repeatable) and/or --models FAMILIES.")
    specs = [ModelSpec(family, family, size=args.size) for family in families]
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
    from ..tokenization import has_tokenizer

    for spec in specs:
        if spec.path is not None and not has_tokenizer(spec.path):
            raise FileNotFoundError(
                f"{spec.path} has no tokenizer, and this probe tokenizes text for it. Save the tokenizer the model was "
                "trained with into the folder: tokenizer.save_pretrained(folder)."
            )


def load_language_model(spec: ModelSpec, fresh_tokenizer, seed: int, length: int) -> tuple[PreTrainedModel, object]:
    """A causal LM and its tokenizer: fresh weights (positions for `length` tokens) with the shared tokenizer, or a
    folder's model and tokenizer."""
    from ..tokenization import load_tokenizer

    if spec.path is None:
        model = build_model(spec.family, "lm", spec.size, fresh_tokenizer, seed=seed, min_positions=length)
        return model, fresh_tokenizer
    tokenizer = load_tokenizer(spec.path)
    model = prepare_model(AutoModelForCausalLM.from_pretrained(spec.path))
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(
            f"The tokenizer in {spec.path} has {len(tokenizer)} tokens but the model only {model.config.vocab_size}; "
            "save the tokenizer the model was trained with."
        )
    return model, tokenizer


def fresh_tokenizer(args, specs: list[ModelSpec], corpus):
    """The tokenizer of the fresh models: `--tokenizer`, or a byte-level BPE trained on the train split."""
    from ..runs import shared_tokenizer

    if all(spec.path is not None for spec in specs):
        return None
    return shared_tokenizer(args.tokenizer or "bpe", corpus["train"])


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
        color = family_color(entry["family"])
        styles[name] = {"color": color, "linestyle": dashes[index % len(dashes)], "label": name}
    return styles


def log2_axis(axis, points: list[int]) -> None:
    """A base-2 logarithmic x axis labelled at `points`: doublings read better than powers of ten here."""
    axis.set_xscale("log", base=2)
    axis.set_xticks(points, labels=[str(point) for point in points])
    axis.minorticks_off()


def apply_preset(args, presets: dict) -> None:
    """Fill the preset's budget into the options not given on the command line."""
    for key, value in dataclasses.asdict(presets[args.preset]).items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def start_run(args, probe: str, units: dict, plots: tuple[str, ...]) -> tuple[RunFolder, dict]:
    """Open the run folder (after every argument was checked) and the skeleton of results.json; run the probe inside
    `folder.discarded_on_failure()`."""
    folder = open_run_folder(
        args.output or default_run_dir(f"probe-{probe}"),
        overwrite=args.overwrite,
        protected=[getattr(args, "dataset", None), getattr(args, "tokenizer", None), *(args.model or [])],
        resume_flag=None,
    )
    folder.claim("results.json", *plots)
    settings = {key: value for key, value in vars(args).items() if key not in ("run", "command", "probe")}
    results = {
        "probe": probe,
        "seed": args.seed,
        "settings": settings,
        "units": units,
        "environment": environment(),
        "models": {},
    }
    return folder, results


def save_results(folder: RunFolder, results: dict, plot: Callable[[Path, dict], list[str]]) -> None:
    """results.json and the plots, rewritten after every model so that an interrupted run keeps what finished."""
    results["plots"] = plot(folder.path, results)
    write_json(folder.path / "results.json", results)
    folder.mark_progress()


def lm_blocks(dataset, tokenizer, block_size: int, max_blocks: int | None = None) -> torch.Tensor:
    """(blocks, block_size) token ids of the text, packed as for language-model training."""
    from ..data import pack_for_lm

    blocks = pack_for_lm(dataset, tokenizer, block_size)
    if max_blocks is not None:
        blocks = blocks.select(range(min(max_blocks, len(blocks))))
    return blocks.with_format("torch")[:]["input_ids"]
