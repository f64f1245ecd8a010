"""The five model families side by side: configs at matched sizes, construction from scratch, parameter counts.

Comparisons are only fair at equal capacity, so sizes are set by non-embedding parameters (token and position
embeddings left out, as in Kaplan et al. 2020): a size names a GPT-2/BERT width and depth, and each recurrent family
gets the hidden size whose non-embedding parameter count matches the transformer's (within a few percent).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    GPT2Config,
    PreTrainedConfig,
    PreTrainedModel,
)

from . import FAMILIES as RECURRENT_CLASSES

RECURRENT_FAMILIES = ("rnn", "lstm", "gru")
MODEL_FAMILIES = (*RECURRENT_FAMILIES, "gpt2", "bert")
CAUSAL_FAMILIES = (*RECURRENT_FAMILIES, "gpt2")
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


def check_family(family: str, allowed: tuple[str, ...] = MODEL_FAMILIES) -> None:
    if family not in allowed:
        raise ValueError(f"Unknown model family {family!r}; choose one of {', '.join(allowed)}.")


def special_token_ids(tokenizer) -> dict:
    ids = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    return {name: token_id for name, token_id in ids.items() if token_id is not None}


def transformer_config(family: str, size: ModelSize, vocab_size: int, **fields) -> PreTrainedConfig:
    """GPT-2 or BERT at `size`; `fields` override any config field (e.g. dropouts, token ids, num_labels)."""
    if family == "gpt2":
        shape = dict(n_embd=size.width, n_layer=size.layers, n_head=size.heads, n_positions=size.max_positions)
        # GPT-2's default token ids (50256) belong to its own vocabulary; ours come from the tokenizer.
        shape.update(bos_token_id=None, eos_token_id=None)
        return GPT2Config(vocab_size=vocab_size, **{**shape, **fields})
    shape = dict(
        hidden_size=size.width,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        intermediate_size=4 * size.width,
        max_position_embeddings=size.max_positions,
    )
    return BertConfig(vocab_size=vocab_size, **{**shape, **fields})


def recurrent_config(family: str, hidden_size: int, size: ModelSize, vocab_size: int, **fields) -> PreTrainedConfig:
    shape = dict(hidden_size=hidden_size, embedding_size=size.width, num_hidden_layers=size.recurrent_layers)
    return RECURRENT_CLASSES[family][0](vocab_size=vocab_size, **{**shape, **fields})


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


def matched_config(
    family: str, size: ModelSize | str, vocab_size: int, task: str = "lm", **fields
) -> PreTrainedConfig:
    """The config of `family` at `size`: the transformer shape itself, or the recurrent hidden size whose
    non-embedding parameter count is closest to the transformer's (GPT-2 for LM, BERT otherwise)."""
    check_family(family)
    size = SIZES[size] if isinstance(size, str) else size
    if family in ("gpt2", "bert"):
        return transformer_config(family, size, vocab_size, **fields)
    reference_family = "gpt2" if task == "lm" else "bert"
    target = count_for_config(transformer_config(reference_family, size, vocab_size), task)

    def count(hidden_size):
        return count_for_config(recurrent_config(family, hidden_size, size, vocab_size, **fields), task)

    low, high = 1, 8 * size.width
    while count(high) < target:
        high *= 2
    while low < high:  # the count grows with the hidden size: find the first one at or above the target
        middle = (low + high) // 2
        low, high = (middle + 1, high) if count(middle) < target else (low, middle)
    best = min((low - 1, low), key=lambda hidden: abs(count(hidden) - target) if hidden > 0 else float("inf"))
    return recurrent_config(family, best, size, vocab_size, **fields)


def count_for_config(config: PreTrainedConfig, task: str) -> int:
    """Non-embedding parameters of the model `config` builds, counted on the meta device (no memory, no init)."""
    with torch.device("meta"):
        model = TASKS[task].from_config(config)
    return non_embedding_parameters(model)


def build_model(
    family: str, task: str, size: ModelSize | str, tokenizer, *, seed: int = 0, **fields
) -> PreTrainedModel:
    """A freshly initialised model of `family` for `task` at a matched size, with the tokenizer's special ids."""
    fields = {**special_token_ids(tokenizer), **fields}
    return build_model_for_vocab(family, task, size, len(tokenizer), seed=seed, **fields)


def build_model_for_vocab(
    family: str, task: str, size: ModelSize | str, vocab_size: int, *, seed: int = 0, **fields
) -> PreTrainedModel:
    """`build_model` without a tokenizer, for synthetic tasks and timings that only need a vocabulary size."""
    check_family(family, CAUSAL_FAMILIES if task == "lm" else MODEL_FAMILIES)
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {', '.join(TASKS)}.")
    config = matched_config(family, size, vocab_size, task, **fields)
    torch.manual_seed(seed)
    return prepare_model(TASKS[task].from_config(config))


def prepare_model(model: PreTrainedModel) -> PreTrainedModel:
    """Fix what transformers leaves to the user: GPT-2's LM head class name does not end in ForCausalLM, so
    without `loss_type` Trainer's `num_items_in_batch` scaling counts unshifted labels (loss 0.8% low at 128)."""
    if isinstance(model.config, GPT2Config) and model.__class__.__name__ == "GPT2LMHeadModel":
        model.loss_type = "ForCausalLM"
    return model
