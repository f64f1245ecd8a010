"""ONNX export with the recurrent state as an explicit input and output, run with ONNX Runtime."""

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from conftest import killed_at, make_model, run_without_hf_evolution
from transformers import AutoConfig, GPT2Config, GPT2LMHeadModel

from hf_evolution.cli import main
from hf_evolution.deploy import onnx_export
from hf_evolution.deploy.onnx_export import (
    check_close,
    check_onnx_against_pytorch,
    export_onnx,
    run_onnx,
    zero_states,
)
from hf_evolution.families import RECURRENT_FAMILIES


def pytorch_states(cache, num_layers):
    """The cache's states as the graph lays them out: one (layers, batch, hidden) tensor per kind of state."""
    kinds = len(cache.layer_state(0))
    return [torch.stack([cache.layer_state(layer)[kind] for layer in range(num_layers)]) for kind in range(kinds)]


@pytest.mark.parametrize("family", RECURRENT_FAMILIES)
def test_onnx_graph_matches_pytorch_for_prompt_and_steps_and_greedy_decodes_like_generate(family, tmp_path):
    model = make_model(family)
    path = export_onnx(model, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [item.name for item in session.get_inputs()][:2] == ["input_ids", "state_h"]
    layers = model.config.num_hidden_layers

    # A prompt of a length and batch the export never saw, then two single steps, each from the returned state.
    prompt = torch.randint(5, 320, (4, 70), generator=torch.Generator().manual_seed(1))
    states = [state.numpy() for state in zero_states(model, 4)]
    cache = None
    for input_ids in (prompt, prompt[:, :1], prompt[:, 1:2]):
        logits, states = run_onnx(session, input_ids.numpy(), states)
        with torch.no_grad():
            output = model(input_ids, cache=cache, use_cache=True)
        cache = output.cache
        np.testing.assert_allclose(logits, output.logits.numpy(), atol=1e-4, rtol=0)
        for ours, expected in zip(states, pytorch_states(cache, layers), strict=True):
            np.testing.assert_allclose(ours, expected.numpy(), atol=1e-4, rtol=0)

    # Greedy decoding over the graph alone gives generate()'s tokens.
    prompt = prompt[:2, :6]
    expected = model.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0)
    tokens = prompt.numpy()
    logits, states = run_onnx(session, tokens, [state.numpy() for state in zero_states(model, 2)])
    for _ in range(8):
        next_token = logits[:, -1].argmax(-1)[:, None]
        tokens = np.concatenate([tokens, next_token], axis=1)
        logits, states = run_onnx(session, next_token, states)
    np.testing.assert_array_equal(tokens, expected.numpy())


# The README's block run where hf_evolution is not installed, with no terminal: everything it prints (a question
# whether to run remote code included) is returned.
README_WITHOUT_HF_EVOLUTION = """
import contextlib, io
printed = io.StringIO()
with contextlib.redirect_stdout(printed):
    exec(ARGS[0], {})
print(json.dumps({"printed": printed.getvalue(), "hf_evolution_loaded": "hf_evolution" in sys.modules}))
"""


def test_the_documented_decoding_loop_gives_the_tokens_of_generate_without_hf_evolution(tmp_path, tiny_tokenizer):
    readme = (Path(__file__).resolve().parent.parent / "docs" / "deploy.md").read_text()
    block = next(part for part in readme.split("```python\n")[1:] if "onnxruntime.InferenceSession" in part)
    code = block.split("```")[0]
    model = make_model("lstm")
    model.save_pretrained(tmp_path / "lstm")
    tiny_tokenizer.save_pretrained(tmp_path / "lstm")
    assert main(["export", "onnx", str(tmp_path / "lstm"), str(tmp_path / "onnx-lstm")]) == 0
    report = run_without_hf_evolution(README_WITHOUT_HF_EVOLUTION, [code], cwd=tmp_path)
    prompt = tiny_tokenizer("The government said", return_tensors="pt")["input_ids"]
    expected = model.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert report["printed"].strip() == tiny_tokenizer.decode(expected[0]).strip()  # no question about remote code


def test_the_exported_config_names_no_code_the_folder_lacks(tmp_path, tiny_tokenizer):
    source, out = tmp_path / "gru", tmp_path / "onnx"
    make_model("gru").save_pretrained(source)
    tiny_tokenizer.save_pretrained(source)
    assert "auto_map" in json.loads((source / "config.json").read_text()), "the model folder ships its code"
    assert main(["export", "onnx", str(source), str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    named = {reference.split(".")[0] + ".py" for reference in config.get("auto_map", {}).values()}
    assert all((out / name).is_file() for name in named), named
    assert "auto_map" not in config  # the folder ships no code: the config names none
    loaded = AutoConfig.from_pretrained(out)  # hf_evolution registers the family
    assert (loaded.model_type, loaded.vocab_size, loaded.hidden_size) == ("gru", 320, 16)


def test_export_is_refused_when_onnx_runtime_disagrees_with_pytorch(tmp_path):
    path = export_onnx(make_model("gru", seed=0), tmp_path / "model.onnx")
    with pytest.raises(RuntimeError, match="differ from PyTorch's"):
        check_onnx_against_pytorch(path, make_model("gru", seed=1))


def test_the_check_allows_float32_rounding_of_large_values_and_refuses_real_differences():
    """|ONNX - PyTorch| <= 1e-4 + 1e-5 |PyTorch| (numpy.allclose): a state of 491 off by 1.4e-4 is a few float32
    roundings of it, not a wrong graph; the same difference on a value near zero, or a NaN, is refused."""

    def check(actual, expected):
        check_close("state_h", np.float32(actual), np.float32(expected), atol=1e-4, rtol=1e-5)

    check([491.00014, -491.00014], [491.0, -491.0])
    check([0.01009], [0.01])
    for actual, expected in (([0.0102], [0.01]), ([491.01], [491.0]), ([np.nan], [0.0]), ([0.0], [np.nan])):
        with pytest.raises(RuntimeError, match="differ from PyTorch's"):
            check(actual, expected)


def test_a_model_whose_states_run_to_a_thousand_exports(tmp_path):
    """A relu RNN with large inputs: on the check's own sample (batch 3, length 7, seed 0) its states exceed 500,
    where one float32 rounding is 3e-5 and the two runtimes differ by more than 1e-4 in absolute terms."""
    model = make_model("rnn", nonlinearity="relu", initializer_range=0.1)  # the scale the figures below are of
    with torch.no_grad():  # large inputs to the recurrence, a projection that brings the logits back to size
        model.model.embeddings.weight.mul_(1e4)
        model.output_projection.weight.div_(1e4)
        sample = torch.randint(0, 320, (3, 7), generator=torch.Generator().manual_seed(0))
        cache = model(sample, use_cache=True).cache
    assert float(cache.layer_state(0)[0].abs().max()) > 500
    path = export_onnx(model, tmp_path / "model.onnx")  # checked against PyTorch, or refused
    assert path.is_file()


def test_export_leaves_the_model_as_it_was(tmp_path):
    model = make_model("lstm").train().to(torch.bfloat16)
    export_onnx(model, tmp_path / "model.onnx")  # exported in float32, checked in float32
    assert model.training and all(module.training for module in model.modules())
    assert {parameter.dtype for parameter in model.parameters()} == {torch.bfloat16}
    assert [path.name for path in tmp_path.iterdir()] == ["model.onnx"], "no temporary file is left"


def test_export_onnx_command_writes_a_folder_a_runtime_needs(tmp_path, tiny_tokenizer, capsys):
    source = tmp_path / "lstm"
    make_model("minlstm").save_pretrained(source)
    tiny_tokenizer.save_pretrained(source)
    out = tmp_path / "onnx"
    assert main(["export", "onnx", str(source), str(out)]) == 0
    assert "checked against PyTorch" in capsys.readouterr().out
    assert {"model.onnx", "config.json", "tokenizer.json"} <= {path.name for path in out.iterdir()}

    assert main(["export", "onnx", str(source), str(out)]) == 2  # an earlier export is kept unless --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", "onnx", str(source), str(out), "--overwrite"]) == 0


def test_export_onnx_command_refuses_what_it_cannot_export_in_one_line(tmp_path, tiny_tokenizer, capsys, monkeypatch):
    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(gpt2)
    classifier = tmp_path / "classifier"
    make_model("gru", head="sequence").save_pretrained(classifier)
    truncated = tmp_path / "truncated"
    make_model("gru").save_pretrained(truncated)
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])  # an interrupted copy
    small_vocabulary = tmp_path / "small-vocabulary"
    make_model("lstm", vocab_size=300).save_pretrained(small_vocabulary)
    tiny_tokenizer.save_pretrained(small_vocabulary)  # 320 tokens: ids 300 to 319 have no embedding row
    capsys.readouterr()

    def no_export(*args, **kwargs):
        raise AssertionError("refused input reached the export")

    monkeypatch.setattr(onnx_export, "export_onnx", no_export)
    for source, message in (
        (gpt2, "takes a recurrent causal LM of hf_evolution"),
        (classifier, "GRUForSequenceClassification"),
        (tmp_path / "missing", "is not a folder"),
        (truncated, f"{truncated / 'model.safetensors'} is truncated or not a safetensors file"),
        (small_vocabulary, "has 320 tokens, but the model's embedding has 300 rows"),
    ):
        assert main(["export", "onnx", str(source), str(tmp_path / "out")]) == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1, error
    assert not (tmp_path / "out").exists()


def test_an_export_killed_before_its_folder_is_in_place_keeps_the_earlier_one_and_reruns(tmp_path, tiny_tokenizer):
    source, out = tmp_path / "gru", tmp_path / "onnx"
    make_model("gru").save_pretrained(source)
    tiny_tokenizer.save_pretrained(source)
    assert main(["export", "onnx", str(source), str(out)]) == 0
    earlier = (out / "model.onnx").read_bytes()
    make_model("gru", seed=1).save_pretrained(source)  # new weights, so that the new graph differs
    killed_at("inside-folder-write", 1, "export", "onnx", str(source), str(out), "--overwrite")
    assert (out / "model.onnx").read_bytes() == earlier, "the earlier export is whole and in place"
    assert main(["export", "onnx", str(source), str(out), "--overwrite"]) == 0
    assert (out / "model.onnx").read_bytes() != earlier
    assert sorted(path.name for path in tmp_path.iterdir()) == ["gru", "onnx"], "no temporary folder is left"
