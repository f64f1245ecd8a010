"""Matched sizes and from-scratch construction for every family."""

import pytest
import torch
from conftest import FAMILIES

from hf_evolution.families import (
    CAUSAL_FAMILIES,
    ENCODER_FAMILIES,
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
    families = CAUSAL_FAMILIES if task == "lm" else ENCODER_FAMILIES
    counts = {family: count_for_config(matched_config(family, size, 8192, task), task) for family in families}
    reference = counts["gpt2" if task == "lm" else "bert"]
    for family, count in counts.items():
        assert abs(count - reference) / reference < 0.05, (family, counts)


def test_vanilla_rnn_is_widest_at_equal_parameters():
    hidden = {family: matched_config(family, "small", 8192).hidden_size for family in FAMILIES}
    assert hidden["rnn"] > hidden["gru"] > hidden["lstm"], "one gate matrix < three < four per unit"
    assert hidden["mingru"] > hidden["minlstm"], "two input projections per unit < three"


def test_mamba_is_transformers_own_at_twice_the_depth(tiny_tokenizer):
    from transformers import MambaForCausalLM

    model = build_model("mamba", "lm", "small", tiny_tokenizer)
    assert type(model) is MambaForCausalLM, "no Mamba of ours: only the sizing"
    assert model.config.num_hidden_layers == 2 * SIZES["small"].layers
    assert (model.config.bos_token_id, model.config.eos_token_id) == (2, 3), "the tokenizer's ids, not Mamba's 0"


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
    with pytest.raises(
        ValueError, match="BERT is a bidirectional encoder: it has no causal perplexity; for --task lm"
    ):
        build_model("bert", "lm", "tiny", tiny_tokenizer)
    with pytest.raises(ValueError, match="no sequence classification head for Mamba; for --task classify choose"):
        build_model("mamba", "classify", "tiny", tiny_tokenizer, labels=["a", "b"])
    with pytest.raises(ValueError, match="Unknown task"):
        build_model("lstm", "translate", "tiny", tiny_tokenizer)


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_explicit_overrides_win_over_the_matched_size(family, tiny_tokenizer):
    task = "classify" if family == "bert" else "lm"
    model = build_model(family, task, "tiny", tiny_tokenizer, hidden_size=48, num_hidden_layers=3, num_labels=2)
    assert model.config.hidden_size == 48 and model.config.num_hidden_layers == 3
    assert model.get_input_embeddings().weight.shape[0] == len(tiny_tokenizer)


@pytest.mark.parametrize("family", (*FAMILIES, "mamba"))
def test_a_depth_override_is_part_of_the_match(family):
    two, three = (matched_config(family, "small", 8192, num_hidden_layers=layers) for layers in (2, 3))
    assert three.num_hidden_layers == 3 and three.hidden_size < two.hidden_size
    reference = count_for_config(matched_config("gpt2", "small", 8192), "lm")
    assert abs(count_for_config(three, "lm") - reference) / reference < 0.05


def test_labels_name_the_classes_and_must_agree_with_num_labels(tiny_tokenizer):
    model = build_model("gru", "classify", "tiny", tiny_tokenizer, labels=["a", "b", "c"])
    assert model.config.num_labels == 3 and model.config.id2label == {0: "a", 1: "b", 2: "c"}
    with pytest.raises(ValueError, match="num_labels=2 was given, but the data has 3 labels"):
        build_model("gru", "classify", "tiny", tiny_tokenizer, labels=["a", "b", "c"], num_labels=2)
    with pytest.raises(ValueError, match="Unknown size 'huge'"):
        build_model("gru", "lm", "huge", tiny_tokenizer)
