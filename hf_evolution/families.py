"""The model families: one record per family (`FAMILIES`), and what derives from it: matched sizes, the one model
builder, parameter counts and descriptions.

Adding a family is one `Family` record plus, for a family of ours, its `configuration_*.py` and `modeling_*.py`:
registration with the `Auto*` classes, `--models`, sizing, learning rates, colours, the results schema and the code
files saved beside a model all read the record (tests/test_families.py proves it with a made-up family).

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

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
    GPT2Model,
    MambaConfig,
    MambaForCausalLM,
    MambaModel,
    PreTrainedConfig,
    PreTrainedModel,
)

TASKS = {
    "base": AutoModel,
    "lm": AutoModelForCausalLM,
    "classify": AutoModelForSequenceClassification,
    "tokens": AutoModelForTokenClassification,
}
KINDS = ("classic", "transformer", "revival")  # the line: classic recurrent networks, transformers, the revival


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


@dataclass(frozen=True)
class Family:
    """Everything the package knows about one model family; nothing else lists families.

    - `heads`: the model class per task of `TASKS` it has; `missing_heads` says, per task it lacks, why (tables and
      errors use these words).
    - `shape`: the config fields a size sets. A family with `width_matched` gets the `hidden_size` whose
      non-embedding parameter count matches the transformer's; the others are the transformer shape itself.
    - `learning_rates`: AdamW's per task (linear decay after 5% warmup), the best of a sweep over {1e-3, 3e-3, 1e-2}
      on compare's default preset. `sgd_learning_rate` marks a classic recurrent LM, which can also train with plain
      SGD and statefully; `max_grad_norm` is its clipping.
    - `dropout_fields`: the config fields of its default dropouts, set together when a preset fixes dropout.
    - `code_files`: for a family of ours, the module stems saved beside a model for `trust_remote_code`.
    """

    name: str
    display_name: str
    kind: str
    config_class: type[PreTrainedConfig]
    heads: dict[str, type[PreTrainedModel]]
    shape: Callable[[ModelSize], dict]
    learning_rates: dict[str, float]
    color: str
    describe: Callable[[PreTrainedModel], str]
    width_matched: bool = True
    missing_heads: dict[str, str] = field(default_factory=dict)
    sgd_learning_rate: float | None = None
    max_grad_norm: float = 1.0
    dropout_fields: tuple[str, ...] = ()
    code_files: tuple[str, ...] = ()

    @property
    def is_ours(self) -> bool:
        return bool(self.code_files)


def describe_recurrent(model: PreTrainedModel) -> str:
    config = model.config
    minimal = FAMILIES[config.model_type].kind == "revival"
    traits = [
        f"{'state' if minimal else 'hidden'} size {config.hidden_size}",
        f"embedding size {config.embedding_size}",
    ]
    if minimal:
        traits.append(f"residual blocks with a feed-forward part of {config.intermediate_size}")
    if config.bidirectional:
        traits.append("bidirectional")
    if config.tie_word_embeddings and hasattr(model, "lm_head"):
        traits.append("tied input and output embeddings")
    if config.model_type == "rnn":
        traits.append(f"{config.nonlinearity} units")
    return f"{config.num_hidden_layers}-layer {FAMILIES[config.model_type].display_name} ({', '.join(traits)})"


def describe_transformer(model: PreTrainedModel) -> str:
    config = model.config
    return (
        f"{FAMILIES[config.model_type].display_name} ({config.num_hidden_layers} layers, width {config.hidden_size}, "
        f"{config.num_attention_heads} heads)"
    )


def describe_mamba(model: PreTrainedModel) -> str:
    config = model.config
    return (
        f"Mamba ({config.num_hidden_layers} layers, width {config.hidden_size}, state size {config.state_size}, "
        f"expansion {config.expand})"
    )


def classic_shape(size: ModelSize) -> dict:
    return dict(embedding_size=size.width, num_hidden_layers=size.recurrent_layers)


def residual_shape(size: ModelSize) -> dict:
    """minGRU and minLSTM: residual blocks as deep as the transformer, over a stream as wide as its embeddings."""
    return dict(embedding_size=size.width, num_hidden_layers=size.layers)


def gpt2_shape(size: ModelSize) -> dict:
    # GPT-2's default token ids (50256) belong to its own vocabulary; ours come from the tokenizer.
    return dict(
        n_embd=size.width,
        n_layer=size.layers,
        n_head=size.heads,
        n_positions=size.max_positions,
        bos_token_id=None,
        eos_token_id=None,
    )


def bert_shape(size: ModelSize) -> dict:
    return dict(
        hidden_size=size.width,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        intermediate_size=4 * size.width,
        max_position_embeddings=size.max_positions,
    )


def mamba_shape(size: ModelSize) -> dict:
    """Twice the transformer's depth; Mamba's default token ids (0) belong to its own vocabulary. Without the
    `mamba_ssm` kernels, transformers scans the sequence one step after the other in Python, and a training step's cost
    grows far faster than the length (141 s at 512 tokens on 2 CPU cores); `use_mambapy` runs mambapy's parallel scan
    instead (same results to 1e-6, tested; 6-10 s at 512)."""
    return dict(
        num_hidden_layers=2 * size.layers, pad_token_id=None, bos_token_id=None, eos_token_id=None, use_mambapy=True
    )


def our_family(name: str, display_name: str, kind: str, prefix: str, code_files: tuple[str, str], **fields) -> Family:
    """A family of ours: its configuration and modeling modules (`code_files`, in this package) name their classes
    `<prefix>Config`, `<prefix>Model`, `<prefix>ForCausalLM`, `<prefix>ForSequenceClassification` and
    `<prefix>ForTokenClassification`."""
    config_module, modeling_module = (importlib.import_module(f"{__package__}.{stem}") for stem in code_files)
    heads = ("Model", "ForCausalLM", "ForSequenceClassification", "ForTokenClassification")
    return Family(
        **{
            "name": name,
            "display_name": display_name,
            "kind": kind,
            "config_class": getattr(config_module, f"{prefix}Config"),
            "heads": {task: getattr(modeling_module, prefix + head) for task, head in zip(TASKS, heads, strict=True)},
            "describe": describe_recurrent,
            "dropout_fields": ("input_dropout", "hidden_dropout"),
            "code_files": code_files,
            **fields,
        }
    )


def classic_recurrent(name: str, display_name: str, prefix: str, **fields) -> Family:
    """RNN, LSTM and GRU: torch's fused kernels, 2 layers, clipped at 0.25 as in AWD-LSTM and Zaremba et al., and
    plain SGD at the classic word language model's 20 as their alternative optimiser."""
    fields = {"code_files": ("configuration_recurrent", "modeling_recurrent"), **fields}
    return our_family(
        name,
        display_name,
        "classic",
        prefix,
        shape=classic_shape,
        sgd_learning_rate=20.0,
        max_grad_norm=0.25,
        **fields,
    )


def min_recurrent(name: str, display_name: str, prefix: str, **fields) -> Family:
    """minGRU and minLSTM (Feng et al. 2024): residual blocks whose recurrence is a parallel scan."""
    fields = {"code_files": ("configuration_minrnn", "modeling_minrnn"), **fields}
    return our_family(
        name,
        display_name,
        "revival",
        prefix,
        shape=residual_shape,
        learning_rates={"lm": 3e-3, "classify": 1e-3},
        **fields,
    )


# The line in the order every table tells it: the classic recurrent networks, the transformers, then the revival.
# Gated recurrent LMs take ten times larger AdamW steps than GPT-2.
FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        classic_recurrent("rnn", "RNN", "RNN", learning_rates={"lm": 3e-3, "classify": 3e-3}, color="#d62728"),
        classic_recurrent("lstm", "LSTM", "LSTM", learning_rates={"lm": 1e-2, "classify": 1e-3}, color="#1f77b4"),
        classic_recurrent("gru", "GRU", "GRU", learning_rates={"lm": 1e-2, "classify": 3e-3}, color="#2ca02c"),
        Family(
            name="gpt2",
            display_name="GPT-2",
            kind="transformer",
            config_class=GPT2Config,
            heads={
                "base": GPT2Model,
                "lm": GPT2LMHeadModel,
                "classify": GPT2ForSequenceClassification,
                "tokens": GPT2ForTokenClassification,
            },
            shape=gpt2_shape,
            width_matched=False,
            learning_rates={"lm": 3e-3, "classify": 1e-3},
            color="#9467bd",
            describe=describe_transformer,
            dropout_fields=("resid_pdrop", "embd_pdrop", "attn_pdrop"),
        ),
        Family(
            name="bert",
            display_name="BERT",
            kind="transformer",
            config_class=BertConfig,
            heads={
                "base": BertModel,
                "classify": BertForSequenceClassification,
                "tokens": BertForTokenClassification,
            },
            missing_heads={"lm": "BERT is a bidirectional encoder: it has no causal perplexity"},
            shape=bert_shape,
            width_matched=False,
            learning_rates={"classify": 3e-3},
            color="#ff7f0e",
            describe=describe_transformer,
            dropout_fields=("hidden_dropout_prob", "attention_probs_dropout_prob"),
        ),
        min_recurrent("mingru", "minGRU", "MinGRU", color="#8c564b"),
        min_recurrent("minlstm", "minLSTM", "MinLSTM", color="#e377c2"),
        Family(
            name="mamba",
            display_name="Mamba",
            kind="revival",
            config_class=MambaConfig,
            heads={"base": MambaModel, "lm": MambaForCausalLM},
            missing_heads={
                "classify": "transformers has no sequence classification head for Mamba",
                "tokens": "transformers has no token classification head for Mamba",
            },
            shape=mamba_shape,
            learning_rates={"lm": 3e-3},
            color="#17becf",
            describe=describe_mamba,
        ),
    )
}

MODEL_FAMILIES = tuple(FAMILIES)
RECURRENT_FAMILIES = tuple(name for name, family in FAMILIES.items() if family.is_ours)  # ours
CLASSIC_FAMILIES = tuple(name for name, family in FAMILIES.items() if family.kind == "classic")
MIN_RNN_FAMILIES = tuple(name for name in RECURRENT_FAMILIES if FAMILIES[name].kind == "revival")
# `--models` (compare and the probes) takes families and these groups; compare's default is the classic line.
MODEL_GROUPS = {
    "classic": tuple(name for name, family in FAMILIES.items() if family.kind in ("classic", "transformer")),
    "revival": tuple(name for name, family in FAMILIES.items() if family.kind == "revival"),
    "all": MODEL_FAMILIES,
}
CAUSAL_FAMILIES = tuple(name for name, family in FAMILIES.items() if "lm" in family.heads)
ENCODER_FAMILIES = tuple(name for name, family in FAMILIES.items() if "classify" in family.heads)


def register_with_auto_classes(family: Family) -> None:
    """Make `AutoConfig` and the `Auto*` head classes build this family of ours (`import hf_evolution` does it)."""
    AutoConfig.register(family.name, family.config_class, exist_ok=True)
    for task, head in family.heads.items():
        TASKS[task].register(family.config_class, head, exist_ok=True)


def family_color(name: str) -> str:
    """A family's colour, the same in every plot so that charts of different runs read alike; grey for others."""
    return FAMILIES[name].color if name in FAMILIES else "#7f7f7f"


def missing_head(family: str, task: str) -> str | None:
    """Why `family` has no head for `task`, or None if it has one."""
    return FAMILIES[family].missing_heads.get(task) if family in FAMILIES else None


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
    allowed = [name for name, record in FAMILIES.items() if task in record.heads]
    if missing_head(family, task):
        raise ValueError(f"{missing_head(family, task)}; for --task {task} choose one of {', '.join(allowed)}.")
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


def family_config(family: str, size: ModelSize, vocab_size: int, fields: dict) -> PreTrainedConfig:
    """The config of `family` in the shape `size` gives it; `fields` override any config field."""
    config_class = FAMILIES[family].config_class
    return config_class(
        vocab_size=vocab_size, **{**FAMILIES[family].shape(size), **canonical_fields(config_class, fields)}
    )


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
    if not FAMILIES[family].width_matched or "hidden_size" in fields:
        return family_config(family, size, vocab_size, fields)
    reference_family = "gpt2" if task == "lm" else "bert"
    target = count_for_config(family_config(reference_family, size, vocab_size, {}), task)

    def count(hidden_size):
        return count_for_config(family_config(family, size, vocab_size, {**fields, "hidden_size": hidden_size}), task)

    low, high = 1, 8 * size.width
    while count(high) < target:
        high *= 2
    while low < high:  # the count grows with the hidden size: find the first one at or above the target
        middle = (low + high) // 2
        low, high = (middle + 1, high) if count(middle) < target else (low, middle)
    best = min((low - 1, low), key=lambda hidden: abs(count(hidden) - target) if hidden > 0 else float("inf"))
    return family_config(family, size, vocab_size, {**fields, "hidden_size": best})


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
    family = FAMILIES.get(model.config.model_type)
    return family.describe(model) if family else model.config.model_type
