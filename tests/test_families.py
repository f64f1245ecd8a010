"""Matched sizes and from-scratch construction for the five families."""

import pytest
import torch
from conftest import FAMILIES

from hf_evolution.families import (
    MODEL_FAMILIES,
    SIZES,
    build_model,
    count_for_config,
    matched_config,
    parameter_counts,
)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("task", ["lm", "classify"])
def test_recurrent_sizes_match_the_transformer_within_5_percent(size, task):
    families = FAMILIES + ("gpt2",) if task == "lm" else MODEL_FAMILIES
    counts = {family: count_for_config(matched_config(family, size, 8192, task), task) for family in families}
    reference = counts["gpt2" if task == "lm" else "bert"]
    for family, count in counts.items():
        assert abs(count - reference) / reference < 0.05, (family, counts)


def test_vanilla_rnn_is_widest_at_equal_parameters():
    hidden = {family: matched_config(family, "small", 8192).hidden_size for family in FAMILIES}
    assert hidden["rnn"] > hidden["gru"] > hidden["lstm"], "one gate matrix < three < four per unit"


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_build_model_uses_the_tokenizer_ids_and_counts_parameters(family, tiny_tokenizer):
    task = "classify" if family == "bert" else "lm"
    model = (
        build_model(family, task, "tiny", tiny_tokenizer, num_labels=3)
        if task == "classify"
        else build_model(family, task, "tiny", tiny_tokenizer)
    )
    assert model.config.vocab_size == len(tiny_tokenizer)
    assert model.config.pad_token_id == tiny_tokenizer.pad_token_id
    counts = parameter_counts(model)
    embedding = model.get_input_embeddings().weight.numel()
    assert counts["non_embedding"] < counts["total"] - embedding + 1
    ids = torch.tensor([[5, 6, 7]])
    assert model(ids).logits.shape[0] == 1


@pytest.mark.parametrize("family", ("lstm", "gpt2"))
def test_trainer_counts_shifted_labels_for_every_causal_lm(family, tiny_tokenizer, tmp_path):
    """Trainer divides the summed loss by the labels it counts; a causal LM must be counted on labels[:, 1:]."""
    from transformers import Trainer, TrainingArguments
    from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss

    model = build_model(family, "lm", "tiny", tiny_tokenizer)
    assert LOSS_MAPPING[model.loss_type] is ForCausalLMLoss
    trainer = Trainer(model=model, args=TrainingArguments(tmp_path, use_cpu=True, report_to="none"))
    assert trainer._loss_shifts_labels


def test_unknown_family_and_task_are_refused(tiny_tokenizer):
    with pytest.raises(ValueError, match="Unknown model family 'transformer'; choose one of rnn, lstm"):
        build_model("transformer", "lm", "tiny", tiny_tokenizer)
    with pytest.raises(ValueError, match="Unknown model family 'bert'"):
        build_model("bert", "lm", "tiny", tiny_tokenizer)
    with pytest.raises(ValueError, match="Unknown task"):
        build_model("lstm", "translate", "tiny", tiny_tokenizer)
