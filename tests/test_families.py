"""The family registry, matched sizes and from-scratch construction for every family."""

import os
from pathlib import Path

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


def test_mamba_trains_with_mambapys_parallel_scan_and_the_same_results(tiny_tokenizer):
    """`use_mambapy` is on and mambapy installed (transformers would fall back to its step-by-step loop without a
    word); its parallel scan gives the loop's logits and gradients."""
    from transformers.utils.import_utils import is_mambapy_available

    torch.manual_seed(0)
    parallel = build_model("mamba", "lm", "tiny", tiny_tokenizer)
    assert parallel.config.use_mambapy and is_mambapy_available()
    sequential = build_model("mamba", "lm", "tiny", tiny_tokenizer, use_mambapy=False)
    sequential.load_state_dict(parallel.state_dict())
    ids = torch.randint(0, tiny_tokenizer.vocab_size, (2, 100))
    for model in (parallel, sequential):
        model(ids, labels=ids).loss.backward()
    torch.testing.assert_close(parallel(ids).logits, sequential(ids).logits, atol=1e-5, rtol=1e-5)
    for ours, theirs in zip(parallel.parameters(), sequential.parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-6, rtol=1e-4)


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


TOY_CONFIGURATION = """
from .configuration_recurrent import GRUConfig


class ToyGRUConfig(GRUConfig):
    model_type = "toygru"
"""
TOY_MODELING = """
from .configuration_toygru import ToyGRUConfig
from .modeling_recurrent import (
    GATES_PER_FAMILY,
    RECURRENT_MODULES,
    GRUForCausalLM,
    GRUForSequenceClassification,
    GRUForTokenClassification,
    GRUModel,
)

RECURRENT_MODULES["toygru"], GATES_PER_FAMILY["toygru"] = RECURRENT_MODULES["gru"], GATES_PER_FAMILY["gru"]


class ToyGRUModel(GRUModel):
    config_class = ToyGRUConfig


class ToyGRUForCausalLM(GRUForCausalLM):
    config_class = ToyGRUConfig


class ToyGRUForSequenceClassification(GRUForSequenceClassification):
    config_class = ToyGRUConfig


class ToyGRUForTokenClassification(GRUForTokenClassification):
    config_class = ToyGRUConfig
"""
TOY_RECORD = """        classic_recurrent(
            "toygru",
            "ToyGRU",
            "ToyGRU",
            code_files=("configuration_toygru", "modeling_toygru"),
            learning_rates={"lm": 7e-3, "classify": 2e-3},
            color="#123456",
        ),
"""
# What a family of the registry gets without any other edit: run in a copy of the package that has one more record.
TOY_CHECKS = """
import json, sys
from pathlib import Path

import jsonschema
from transformers import AutoConfig, AutoModelForCausalLM

import hf_evolution
from hf_evolution.cli import build_parser, main
from hf_evolution.compare.report import results_schema
from hf_evolution.compare.settings import run_settings, training_recipe
from hf_evolution.families import (
    TASKS, build_model, count_for_config, describe_model, family_color, matched_config, requested_models
)
from hf_evolution.probes.common import DEFAULT_FAMILIES
from hf_evolution.training.trainer import REMOTE_CODE_FILES

work = Path(sys.argv[1])
assert hf_evolution.__file__.startswith(str(work)), hf_evolution.__file__
from hf_evolution.configuration_toygru import ToyGRUConfig
from hf_evolution.modeling_toygru import ToyGRUForCausalLM

assert type(AutoConfig.for_model("toygru")) is ToyGRUConfig
assert requested_models("classic") == ["rnn", "lstm", "gru", "toygru", "gpt2", "bert"]
assert "toygru" in DEFAULT_FAMILIES
for task in TASKS:
    model = build_model("toygru", task, "tiny", 300, labels=["a", "b"] if task in ("classify", "tokens") else None)
    assert type(model).__name__.startswith("ToyGRU"), (task, type(model))
reference = count_for_config(matched_config("gpt2", "small", 8192), "lm")
assert abs(count_for_config(matched_config("toygru", "small", 8192), "lm") - reference) / reference < 0.05
assert training_recipe("lm", "toygru", "best", None, None).learning_rate == 7e-3
stateful = training_recipe("lm", "toygru", "stateful", "sgd", None)
assert (stateful.optimizer, stateful.learning_rate, stateful.stateful) == ("sgd", 20.0, True)
assert training_recipe("classify", "toygru", "best", None, None).learning_rate == 2e-3
args = build_parser().parse_args(["compare", "--models", "toygru", "--preset", "smoke"])
assert run_settings(args).models == {"lm": ["toygru"], "classify": ["toygru"]}
assert family_color("toygru") == "#123456" and "ToyGRU" in describe_model(model)
assert {"configuration_toygru.py", "modeling_toygru.py"} <= set(REMOTE_CODE_FILES)

model = build_model("toygru", "lm", "tiny", 300)
model.save_pretrained(work / "saved")
assert type(AutoModelForCausalLM.from_pretrained(work / "saved")) is ToyGRUForCausalLM

output = work / "run"
command = ["compare", "--preset", "smoke", "--task", "lm", "--models", "toygru", "--budget-tokens", "4096"]
assert main([*command, "--output", str(output)]) == 0
results = json.loads((output / "results.json").read_text())
jsonschema.Draft202012Validator(results_schema()).validate(results)
assert [row["model"] for row in results["runs"]] == ["toygru"]
assert "toygru" in (output / "results.md").read_text()
print("toy family ok")
"""


def test_a_new_family_is_one_record_plus_its_modeling_files(tmp_path):
    """Copy the package, add configuration_toygru.py, modeling_toygru.py and one record to FAMILIES, and nothing
    else: the Auto classes, --models, sizing, learning rates, colour, the results schema, the saved code files and a
    compare run all take the new family."""
    import shutil
    import subprocess
    import sys

    import hf_evolution

    package = tmp_path / "hf_evolution"
    shutil.copytree(Path(hf_evolution.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "configuration_toygru.py").write_text(TOY_CONFIGURATION)
    (package / "modeling_toygru.py").write_text(TOY_MODELING)
    families = package / "families.py"
    source = families.read_text()
    anchor = '        Family(\n            name="gpt2",'
    assert source.count(anchor) == 1, "the record goes right before GPT-2's"
    families.write_text(source.replace(anchor, TOY_RECORD + anchor))
    (tmp_path / "checks.py").write_text(TOY_CHECKS)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "checks.py"), str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0 and "toy family ok" in result.stdout, result.stderr[-3000:]
