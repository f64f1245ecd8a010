"""The model families side by side: matched sizes, the one model builder, parameter counts and descriptions.

Comparisons are only fair at equal capacity, so sizes are set by non-embedding parameters (token and position
embeddings left out, as in Kaplan et al. 2020): a size names a GPT-2/BERT width and depth, and each recurrent family
gets the hidden size whose non-embedding parameter count matches the transformer's (within a few percent).

The recurrent revival is matched the same way: minGRU and minLSTM by the size of their state, Mamba (transformers'
own implementation) by its width, at twice the transformer's depth as in the Mamba paper (a Mamba block holds about
half the parameters of a transformer block).

`build_model` is how compare, the probes, both example scripts and the benchmarks make a model from scratch: family +
size (or any config field given explicitly, which wins over the matched size) + task and labels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    GPT2Config,
    MambaConfig,
    PreTrainedConfig,
    PreTrainedModel,
)

from . import FAMILIES as RECURRENT_CLASSES

RECURRENT_FAMILIES = tuple(RECURRENT_CLASSES)  # ours: rnn, lstm, gru, mingru, minlstm
CLASSIC_FAMILIES = ("rnn", "lstm", "gru")
MIN_RNN_FAMILIES = ("mingru", "minlstm")
TRANSFORMER_CONFIGS = {"gpt2": GPT2Config, "bert": BertConfig}
# The line in the order every table tells it: the classic recurrent networks, the transformers, then the revival.
MODEL_FAMILIES = (*CLASSIC_FAMILIES, *TRANSFORMER_CONFIGS, *MIN_RNN_FAMILIES, "mamba")
# `--models` (compare and the probes) takes families and these groups; compare's default is the classic line.
MODEL_GROUPS = {
    "classic": (*CLASSIC_FAMILIES, *TRANSFORMER_CONFIGS),
    "revival": (*MIN_RNN_FAMILIES, "mamba"),
    "all": MODEL_FAMILIES,
}
# What a family cannot do, and why: the tables and errors say it in these words.
MISSING_HEADS = {
    "lm": {"bert": "BERT is a bidirectional encoder: it has no causal perplexity"},
    "classify": {"mamba": "transformers has no sequence classification head for Mamba"},
    "tokens": {"mamba": "transformers has no token classification head for Mamba"},
}
# The config fields that set a family's dropout (the dropouts it uses by default; Mamba has none): one number for
# every family, as compare's default preset sets 0 for runs shorter than an epoch or two.
DROPOUT_FIELDS = {
    **{family: ("input_dropout", "hidden_dropout") for family in ("rnn", "lstm", "gru", "mingru", "minlstm")},
    "gpt2": ("resid_pdrop", "embd_pdrop", "attn_pdrop"),
    "bert": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "mamba": (),
}
CAUSAL_FAMILIES = tuple(family for family in MODEL_FAMILIES if family not in MISSING_HEADS["lm"])
ENCODER_FAMILIES = tuple(family for family in MODEL_FAMILIES if family not in MISSING_HEADS["classify"])
FAMILY_NAMES = {
    "rnn": "RNN",
    "lstm": "LSTM",
    "gru": "GRU",
    "gpt2": "GPT-2",
    "bert": "BERT",
    "mingru": "minGRU",
    "minlstm": "minLSTM",
    "mamba": "Mamba",
}
TASKS = {
    "base": AutoModel,
    "lm": AutoModelForCausalLM,
    "classify": AutoModelForSequenceClassification,
    "tokens": AutoModelForTokenClassification,
}


@dataclass(frozen=True)
class ModelSize:
    """A transformer shape (width, depth, heads, context); recurrent families are matched to it by parameter count.

    `recurrent_layers` is the depth of the recurrent models: deep RNN stacks train badly, so they keep 2 layers
    (Zaremba et al. 2014; AWD-LSTM uses 3) and widen instead.
    """

    width: int
    layers: int
    heads: int
    max_positions: int = 1024
    recurrent_layers: int = 2


SIZES = {
    "tiny": ModelSize(width=32, layers=2, heads=2, max_positions=256),
    "small": ModelSize(width=128, layers=2, heads=4),
    "medium": ModelSize(width=256, layers=4, heads=4),
    "base": ModelSize(width=512, layers=6, heads=8),
}


def requested_models(text: str) -> list[str]:
    """The families of a `--models` list (names and groups), each once, in the order of the line (MODEL_FAMILIES)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODEL_FAMILIES and name not in MODEL_GROUPS]
    if unknown or not names:
        raise ValueError(
            f"Unknown model(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(MODEL_FAMILIES)} or a "
            f"group ({', '.join(MODEL_GROUPS)})."
        )
    chosen = {family for name in names for family in MODEL_GROUPS.get(name, (name,))}
    return [family for family in MODEL_FAMILIES if family in chosen]


def check_family(family: str, task: str = "base") -> None:
    """Refuse an unknown family, or one without a head for `task` (saying why), before any work."""
    allowed = [name for name in MODEL_FAMILIES if name not in MISSING_HEADS.get(task, {})]
    if family in MISSING_HEADS.get(task, {}):
        raise ValueError(f"{MISSING_HEADS[task][family]}; for --task {task} choose one of {', '.join(allowed)}.")
    if family not in allowed:
        raise ValueError(f"Unknown model family {family!r}; choose one of {', '.join(allowed)}.")


def folder_config(path: Path) -> PreTrainedConfig:
    """The config of a saved model folder, or a one-line error saying the folder is not one."""
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{path} is not a folder; give the folder a model was saved to (save_pretrained).")
    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a model folder: it has no config.json (write one with model.save_pretrained(folder))."
        )
    return AutoConfig.from_pretrained(path)


def check_recurrent_lm_folder(path: Path, action: str) -> PreTrainedConfig:
    """The config of a folder holding one of our recurrent causal LMs; anything else is refused before any work."""
    config = folder_config(path)
    architectures = config.architectures or []
    if config.model_type not in RECURRENT_FAMILIES or not any(name.endswith("ForCausalLM") for name in architectures):
        held = f"{config.model_type} {'/'.join(architectures) or 'model'}"
        raise ValueError(
            f"{action} takes a recurrent causal LM of hf_evolution ({', '.join(RECURRENT_FAMILIES)}); {path} holds a "
            f"{held}."
        )
    return config


def check_size(size: ModelSize | str) -> ModelSize:
    if isinstance(size, ModelSize):
        return size
    if size not in SIZES:
        raise ValueError(f"Unknown size {size!r}; choose one of {', '.join(SIZES)}.")
    return SIZES[size]


def special_token_ids(tokenizer) -> dict:
    ids = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    return {name: token_id for name, token_id in ids.items() if token_id is not None}


def label_fields(label_names: list[str]) -> dict:
    return {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: i for i, name in enumerate(label_names)},
    }


def canonical_fields(config_class: type[PreTrainedConfig], fields: dict) -> dict:
    """Field names as the config stores them: GPT-2 takes `hidden_size=` as `n_embd`, and so on."""
    aliases = getattr(config_class, "attribute_map", {})
    return {aliases.get(name, name): value for name, value in fields.items()}


def transformer_config(family: str, size: ModelSize, vocab_size: int, fields: dict) -> PreTrainedConfig:
    """GPT-2 or BERT at `size`; `fields` override any config field (width and depth included)."""
    if family == "gpt2":
        shape = dict(n_embd=size.width, n_layer=size.layers, n_head=size.heads, n_positions=size.max_positions)
        # GPT-2's default token ids (50256) belong to its own vocabulary; ours come from the tokenizer.
        shape.update(bos_token_id=None, eos_token_id=None)
    else:
        shape = dict(
            hidden_size=size.width,
            num_hidden_layers=size.layers,
            num_attention_heads=size.heads,
            intermediate_size=4 * size.width,
            max_position_embeddings=size.max_positions,
        )
    config_class = TRANSFORMER_CONFIGS[family]
    return config_class(vocab_size=vocab_size, **{**shape, **canonical_fields(config_class, fields)})


def width_matched_config(family: str, size: ModelSize, vocab_size: int, fields: dict) -> PreTrainedConfig:
    """A family whose `hidden_size` the match sets: the classic recurrent networks (2 layers, see `ModelSize`),
    minGRU and minLSTM (residual blocks as deep as the transformer, over a stream as wide as its embeddings) and
    Mamba (twice the transformer's depth)."""
    if family == "mamba":
        # Mamba's default token ids (0) belong to its own vocabulary; ours come from the tokenizer.
        shape = dict(num_hidden_layers=2 * size.layers, pad_token_id=None, bos_token_id=None, eos_token_id=None)
        return MambaConfig(vocab_size=vocab_size, **{**shape, **fields})
    config_class = RECURRENT_CLASSES[family][0]
    depth = size.recurrent_layers if family in CLASSIC_FAMILIES else size.layers
    shape = dict(embedding_size=size.width, num_hidden_layers=depth)
    return config_class(vocab_size=vocab_size, **{**shape, **fields})


def non_embedding_parameters(model: PreTrainedModel) -> int:
    """Parameters outside the token, position and token-type embeddings and the output layer over the vocabulary
    (weights and bias, tied or not: either way it is the vocabulary's embedding)."""
    excluded = {id(module.weight) for module in model.modules() if isinstance(module, torch.nn.Embedding)}
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None:
        excluded.update(id(param) for param in output.parameters())  # its bias is one number per token too
    unique = {id(param): param for param in model.parameters()}
    return sum(param.numel() for key, param in unique.items() if key not in excluded)


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    total = sum(param.numel() for param in model.parameters())  # parameters() yields a tied weight once
    return {"total": total, "non_embedding": non_embedding_parameters(model)}


def count_for_config(config: PreTrainedConfig, task: str) -> int:
    """Non-embedding parameters of the model `config` builds, counted on the meta device (no memory, no init)."""
    with torch.device("meta"):
        model = TASKS[task].from_config(config)
    return non_embedding_parameters(model)


def matched_config(
    family: str, size: ModelSize | str, vocab_size: int, task: str = "lm", **fields
) -> PreTrainedConfig:
    """The config of `family` at `size`: the transformer shape itself, or the hidden size (state or width) whose
    non-embedding parameter count is closest to the transformer's (GPT-2 for LM, BERT otherwise).

    `fields` set any config field and win over the size: a given `hidden_size` is used as it is; other fields (a
    depth, say) are part of the match."""
    check_family(family)
    return sized_config(family, check_size(size), vocab_size, task, fields)


def sized_config(family: str, size: ModelSize, vocab_size: int, task: str, fields: dict) -> PreTrainedConfig:
    if family in TRANSFORMER_CONFIGS:
        return transformer_config(family, size, vocab_size, fields)
    if "hidden_size" in fields:
        return width_matched_config(family, size, vocab_size, fields)
    reference_family = "gpt2" if task == "lm" else "bert"
    target = count_for_config(transformer_config(reference_family, size, vocab_size, {}), task)

    def count(hidden_size):
        return count_for_config(
            width_matched_config(family, size, vocab_size, {**fields, "hidden_size": hidden_size}), task
        )

    low, high = 1, 8 * size.width
    while count(high) < target:
        high *= 2
    while low < high:  # the count grows with the hidden size: find the first one at or above the target
        middle = (low + high) // 2
        low, high = (middle + 1, high) if count(middle) < target else (low, middle)
    best = min((low - 1, low), key=lambda hidden: abs(count(hidden) - target) if hidden > 0 else float("inf"))
    return width_matched_config(family, size, vocab_size, {**fields, "hidden_size": best})


def build_model(
    family: str,
    task: str,
    size: ModelSize | str,
    tokenizer_or_vocab_size,
    *,
    seed: int = 0,
    labels: list[str] | None = None,
    min_positions: int | None = None,
    **overrides,
) -> PreTrainedModel:
    """A freshly initialised model of `family` for `task` (`lm`, `classify`, `tokens` or `base`) at a matched size.

    `tokenizer_or_vocab_size` gives the vocabulary (and, for a tokenizer, the special token ids); `labels` names the
    classes of a classifier; `min_positions` gives a transformer learned positions for at least that many tokens;
    `overrides` set any config field and win over all of these."""
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {', '.join(TASKS)}.")
    check_family(family, task)
    size = check_size(size)
    if min_positions is not None and min_positions > size.max_positions:
        size = replace(size, max_positions=min_positions)
    fields = {}
    if isinstance(tokenizer_or_vocab_size, int):
        vocab_size = tokenizer_or_vocab_size
    else:
        vocab_size = len(tokenizer_or_vocab_size)
        fields.update(special_token_ids(tokenizer_or_vocab_size))
    if labels is not None:
        if overrides.get("num_labels", len(labels)) != len(labels):
            raise ValueError(
                f"num_labels={overrides['num_labels']} was given, but the data has {len(labels)} labels "
                f"({', '.join(map(str, labels))}); leave num_labels out, it comes from the data."
            )
        fields.update(label_fields(labels))
    config = sized_config(family, size, vocab_size, task, {**fields, **overrides})
    torch.manual_seed(seed)
    return prepare_model(TASKS[task].from_config(config))


def prepare_model(model: PreTrainedModel) -> PreTrainedModel:
    """Fix what transformers leaves to the user: GPT-2's LM head class name does not end in ForCausalLM, so
    without `loss_type` Trainer's `num_items_in_batch` scaling counts unshifted labels (loss 0.8% low at 128)."""
    if isinstance(model.config, GPT2Config) and model.__class__.__name__ == "GPT2LMHeadModel":
        model.loss_type = "ForCausalLM"
    return model


def position_limit(config: PreTrainedConfig) -> int | None:
    """Longest sequence a model with learned positions accepts; None for recurrent models, which have no limit."""
    return getattr(config, "max_position_embeddings", None)


def shape(config: PreTrainedConfig) -> str:
    """`layers x width`, the shape every table shows."""
    return f"{config.num_hidden_layers} x {config.hidden_size}"


def describe_model(model: PreTrainedModel) -> str:
    """One line on what the model is, for model cards and logs."""
    config = model.config
    name = FAMILY_NAMES.get(config.model_type, config.model_type)
    if config.model_type in RECURRENT_FAMILIES:
        size = "state size" if config.model_type in MIN_RNN_FAMILIES else "hidden size"
        traits = [f"{size} {config.hidden_size}", f"embedding size {config.embedding_size}"]
        if config.model_type in MIN_RNN_FAMILIES:
            traits.append(f"residual blocks with a feed-forward part of {config.intermediate_size}")
        if config.bidirectional:
            traits.append("bidirectional")
        if config.tie_word_embeddings and hasattr(model, "lm_head"):
            traits.append("tied input and output embeddings")
        if config.model_type == "rnn":
            traits.append(f"{config.nonlinearity} units")
        return f"{config.num_hidden_layers}-layer {name} ({', '.join(traits)})"
    if config.model_type == "mamba":
        return (
            f"Mamba ({config.num_hidden_layers} layers, width {config.hidden_size}, state size {config.state_size}, "
            f"expansion {config.expand})"
        )
    if config.model_type in TRANSFORMER_CONFIGS:
        return (
            f"{name} ({config.num_hidden_layers} layers, width {config.hidden_size}, "
            f"{config.num_attention_heads} heads)"
        )
    return config.model_type
