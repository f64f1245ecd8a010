"""Dynamic int8 quantization (hf_evolution.deploy.quantization): every recurrent family, the padding and decoding paths,
the saved folder and `hf-evolution quantize`.

Tolerance: int8 weights and 8-bit dynamic activations (per tensor) cost each matrix product about 1/127 of its largest
values, and the recurrence compounds that over the steps. At random init the tiny models' logits are near zero (1e-3
for the LSTM), where this weighs most: over five seeds their logits are 1-6% off the float ones (relative Frobenius
error), so 8% is the bound. Argmax agreement is no test at random init: near-uniform logits flip under any rounding.
The accuracy figure that counts is the trained `small` LSTM's validation perplexity in benchmarks/quantization.py.
Identity is asserted where the same int8 weights see the same calls (save/load, generate, padding that never reaches
the kernels)."""

import json
import shutil

import pytest
import torch
import torch.ao.nn.quantized.dynamic as nnqd
from conftest import FAMILIES, make_model
from torch import nn
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from hf_evolution.cli import main
from hf_evolution.deploy import quantization
from hf_evolution.deploy.quantization import (
    QUANTIZATION_NAME,
    WEIGHTS_NAME,
    load_quantized,
    quantization_summary,
    quantize_dynamic_int8,
    quantized_state_dict,
    save_quantized,
)
from hf_evolution.families import build_model

TOLERANCE = 0.08
NO_EOS = {"eos_token_id": None}


def relative_error(expected: torch.Tensor, actual: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


def ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(5, 320, (batch, length), generator=torch.Generator().manual_seed(seed))


def padded_batch():
    """Left padding, right padding, a hole in the middle, and a row of padding alone."""
    input_ids = ids(4, 10, seed=1)
    mask = torch.ones_like(input_ids)
    mask[0, :4] = 0
    mask[1, 7:] = 0
    mask[2, 3] = 0
    mask[3] = 0
    return input_ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("model_type", FAMILIES)
def test_every_family_quantizes_its_layers_and_stays_close_to_float(model_type):
    model = make_model(model_type)
    quantized = quantize_dynamic_int8(model)
    kinds = {type(module) for module in quantized.modules()}
    assert nnqd.Linear in kinds and nn.Linear not in kinds and nn.LSTM not in kinds and nn.GRU not in kinds
    assert isinstance(quantized.lm_head, nnqd.Linear) and isinstance(quantized.model.embeddings, nn.Embedding)
    recurrent = [getattr(layer, "rnn", None) for layer in quantized.model.layers]
    expected = {"lstm": nnqd.LSTM, "gru": nnqd.GRU, "rnn": nn.RNN}.get(model_type)
    if expected is not None:  # torch has no dynamic quantized nn.RNN: the RNN family keeps float recurrent weights
        assert all(type(rnn) is expected for rnn in recurrent)
    summary = quantization_summary(quantized)
    if model_type == "rnn":
        assert any("no dynamic quantized nn.RNN" in why for why in summary["float"].values())
    assert "lm_head" in summary["int8"] and summary["float"]["model.embeddings"].startswith("Embedding")
    # The float model is left as it was, tied.
    assert type(model.lm_head) is nn.Linear and model.lm_head.weight is model.model.embeddings.weight
    with torch.no_grad():
        float_logits, int8_logits = model(ids(3, 16)).logits, quantized(ids(3, 16)).logits
    assert relative_error(float_logits, int8_logits) < TOLERANCE
    assert not torch.equal(float_logits, int8_logits), "the int8 model computes in int8"


def test_keep_float_head_keeps_the_tie_and_refusals():
    model = make_model("lstm")
    quantized = quantize_dynamic_int8(model, include_head=False)
    assert type(quantized.lm_head) is nn.Linear and quantized.lm_head.weight is quantized.model.embeddings.weight
    assert isinstance(quantized.model.layers[0].rnn, nnqd.LSTM)
    with pytest.raises(ValueError, match="quantized already"):
        quantize_dynamic_int8(quantized)
    with pytest.raises(ValueError, match="model of hf_evolution"):
        quantize_dynamic_int8(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="float32"):
        quantize_dynamic_int8(make_model("gru").to(torch.bfloat16))


@pytest.mark.parametrize("model_type", FAMILIES)
def test_padding_runs_through_the_quantized_layers(model_type):
    """Padded rows run packed (classic families) or masked (minRNN) through the int8 layers. Packed, padding never
    reaches a kernel, so other pad tokens change nothing at all; masked, pad tokens still pass the int8 gates (their
    outputs masked), where they widen the activation range a little. Every row stays close to float, alone."""
    model = make_model(model_type)
    quantized = quantize_dynamic_int8(model)
    input_ids, mask = padded_batch()
    other_pads = torch.where(mask.bool(), input_ids, ids(4, 10, seed=7))
    with torch.no_grad():
        batch = quantized(input_ids, attention_mask=mask).logits
        rows, other = (quantized(x[:3], attention_mask=mask[:3]).logits for x in (input_ids, other_pads))
        for row in range(3):
            real = mask[row].bool()
            alone = model(input_ids[row : row + 1, real]).logits[0]
            assert relative_error(alone, batch[row, real]) < TOLERANCE
    real = mask[:3].bool()
    if model_type in ("rnn", "lstm", "gru"):
        assert torch.equal(rows[real], other[real])
    else:
        assert relative_error(rows[real], other[real]) < 0.03  # measured at most 1.1%; pads taken as tokens: 8%
    # Padding alone: zero hidden states, so the logits are the head's bias, in int8 as in float.
    torch.testing.assert_close(batch[3], model.lm_head.bias.expand(10, -1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_greedy_generate_equals_a_hand_loop_over_the_cached_forward(model_type):
    quantized = quantize_dynamic_int8(make_model(model_type, **NO_EOS))
    prompt = ids(1, 6, seed=2)
    generated = quantized.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0)
    with torch.no_grad():  # what generate() does: the prompt once, then one token at a time with the cache
        output = quantized(prompt, use_cache=True, logits_to_keep=1)
        tokens = [output.logits[:, -1].argmax(-1)]
        for _ in range(7):
            output = quantized(tokens[-1][:, None], cache=output.cache, use_cache=True, logits_to_keep=1)
            tokens.append(output.logits[:, -1].argmax(-1))
    assert generated.shape == (1, 14)
    assert torch.equal(generated, torch.cat([prompt, torch.stack(tokens, dim=1)], dim=1))
    # A left-padded batch generates too (the padding path inside generate()).
    input_ids, mask = padded_batch()
    batch = quantized.generate(input_ids[:2], attention_mask=mask[:2], max_new_tokens=4, do_sample=False)
    assert batch.shape == (2, 14) and int(batch.max()) < 320


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")  # torch.load of int8 tensors, called here directly
@pytest.mark.parametrize("model_type", ["lstm", "rnn", "minlstm"])
def test_save_and_load_give_identical_logits(model_type, tmp_path, tiny_tokenizer):
    quantized = quantize_dynamic_int8(make_model(model_type))
    folder = save_quantized(quantized, tiny_tokenizer, tmp_path / "int8")
    names = {path.name for path in folder.iterdir()}
    assert {"config.json", "generation_config.json", WEIGHTS_NAME, QUANTIZATION_NAME, "tokenizer.json"} <= names
    assert not list(tmp_path.glob(".*")), "no temporary folder is left beside the output"
    # The weights are a state dict the safe unpickler reads; torch's own state dict of the same model is not.
    assert torch.load(folder / WEIGHTS_NAME, weights_only=True)
    if model_type == "lstm":
        torch.save(quantized.state_dict(), tmp_path / "torch_state.pt")
        with pytest.raises(Exception, match="ScriptObject"):
            torch.load(tmp_path / "torch_state.pt", weights_only=True)
    loaded = load_quantized(folder)
    assert quantization_summary(loaded) == quantization_summary(quantized)
    input_ids, mask = padded_batch()
    with torch.no_grad():
        assert torch.equal(
            loaded(input_ids, attention_mask=mask).logits, quantized(input_ids, attention_mask=mask).logits
        )
    assert AutoTokenizer.from_pretrained(folder)("the cat")["input_ids"] == tiny_tokenizer("the cat")["input_ids"]
    record = json.loads((folder / QUANTIZATION_NAME).read_text())
    assert record["include_head"] is True and record["torch"] == torch.__version__
    kept = quantize_dynamic_int8(make_model(model_type), include_head=False)
    reloaded = load_quantized(save_quantized(kept, None, tmp_path / "kept"))
    assert reloaded.lm_head.weight is reloaded.model.embeddings.weight
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_quantized(kept, None, tmp_path / "kept")
    save_quantized(kept, None, tmp_path / "kept", overwrite=True)
    assert torch.equal(quantized_state_dict(load_quantized(tmp_path / "kept"))["lm_head.bias"], kept.lm_head.bias)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_the_saved_weights_are_smaller_than_the_float_safetensors(model_type, tmp_path):
    """At the `tiny` size (width 32, vocabulary 320). The RNN family keeps float recurrent weights, so its int8 head, a
    copy beside the float embedding, makes its file larger; with the head kept float and tied it is smaller."""
    model = build_model(model_type, "lm", "tiny", 320).eval()
    model.save_pretrained(tmp_path / "float")
    float_bytes = (tmp_path / "float" / "model.safetensors").stat().st_size
    sizes = {}
    for include_head in (True, False):
        folder = save_quantized(
            quantize_dynamic_int8(model, include_head=include_head), None, tmp_path / str(include_head)
        )
        sizes[include_head] = (folder / WEIGHTS_NAME).stat().st_size / float_bytes
    assert sizes[False] < 1.0
    if model_type == "rnn":
        assert sizes[True] > 1.0
    else:
        assert sizes[True] < 0.7


@pytest.fixture
def float_folder(tmp_path, tiny_tokenizer):
    folder = tmp_path / "lstm"
    make_model("lstm").save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def test_the_command_quantizes_a_folder(float_folder, tmp_path, capsys):
    output = tmp_path / "int8"
    assert main(["quantize", str(float_folder), str(output)]) == 0
    printed = capsys.readouterr().out
    assert "bytes (float32) ->" in printed and "int8: LSTM x2 (model.layers.0.rnn, model.layers.1.rnn)" in printed
    assert "float: Embedding x1 (model.embeddings)" in printed
    loaded = load_quantized(output)
    assert isinstance(loaded.model.layers[0].rnn, nnqd.LSTM) and (output / "tokenizer.json").is_file()
    assert main(["quantize", str(float_folder), str(output)]) == 2
    assert "Pass --overwrite" in capsys.readouterr().err
    assert main(["quantize", "--keep-float-head", "--overwrite", str(float_folder), str(output)]) == 0
    assert "Linear x1 (lm_head): the head, kept float" in capsys.readouterr().out
    assert json.loads((output / QUANTIZATION_NAME).read_text())["include_head"] is False


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
def test_load_quantized_refuses_weights_that_do_not_fit_the_config_and_names_them(tmp_path):
    folder = save_quantized(quantize_dynamic_int8(make_model("lstm")), None, tmp_path / "lstm")
    wider = save_quantized(quantize_dynamic_int8(make_model("lstm", hidden_size=24)), None, tmp_path / "wider")
    deeper = save_quantized(quantize_dynamic_int8(make_model("lstm", num_hidden_layers=3)), None, tmp_path / "deeper")
    for source, message in (
        (wider, "model.layers.0.rnn.weight_hh_l0 is (96, 24) qint8 where the config's model has (64, 16) qint8"),
        (deeper, "unexpected model.layers.2.rnn.bias_hh_l0"),
    ):
        shutil.copy(source / WEIGHTS_NAME, folder / WEIGHTS_NAME)
        with pytest.raises(ValueError, match="does not fit the model of") as refused:
            load_quantized(folder)
        assert message in str(refused.value) and str(folder / "config.json") in str(refused.value)
    other_head = save_quantized(quantize_dynamic_int8(make_model("lstm"), include_head=False), None, tmp_path / "kept")
    shutil.copy(other_head / WEIGHTS_NAME, folder / WEIGHTS_NAME)  # a float head's weights under an int8 head's record
    with pytest.raises(ValueError, match="missing lm_head._packed_params.*unexpected lm_head.bias, lm_head.weight"):
        load_quantized(folder)


def test_the_command_refuses_with_one_line_before_any_work(
    float_folder, tmp_path, capsys, monkeypatch, tiny_tokenizer
):
    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50)).save_pretrained(gpt2)
    classifier = tmp_path / "classifier"
    make_model("gru", head="sequence").save_pretrained(classifier)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    (tmp_path / "a_file").write_text("")
    quantized = tmp_path / "quantized"
    assert main(["quantize", str(float_folder), str(quantized)]) == 0
    truncated = tmp_path / "truncated"
    shutil.copytree(float_folder, truncated)
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[:-100])  # an interrupted copy
    small_vocabulary = tmp_path / "small-vocabulary"
    make_model("lstm", vocab_size=300).save_pretrained(small_vocabulary)
    tiny_tokenizer.save_pretrained(small_vocabulary)  # 320 tokens: ids 300 to 319 have no embedding row
    capsys.readouterr()

    def no_quantization(*args, **kwargs):
        raise AssertionError("refused input reached the quantization")

    monkeypatch.setattr(quantization, "quantize_dynamic_int8", no_quantization)
    cases = [
        ([tmp_path / "missing", tmp_path / "out"], "is not a folder"),
        ([tmp_path / "a_file", tmp_path / "out"], "is not a folder"),
        ([tmp_path / "foreign", tmp_path / "out"], "no config.json"),
        ([gpt2, tmp_path / "out"], "quantize takes a recurrent causal LM of hf_evolution (rnn"),
        ([classifier, tmp_path / "out"], "holds a gru GRUForSequenceClassification"),
        ([quantized, tmp_path / "out"], "holds a quantized model already"),
        ([truncated, tmp_path / "out"], f"{truncated / 'model.safetensors'} is truncated or not a safetensors file"),
        ([small_vocabulary, tmp_path / "out"], "has 320 tokens, but the model's embedding has 300 rows"),
        ([float_folder, foreign], "holds files that hf_evolution did not write (notes.txt)"),
        ([float_folder, tmp_path / "a_file"], "is a file, not a folder"),
        ([float_folder, float_folder], "is or holds the input"),
    ]
    for arguments, message in cases:
        assert main(["quantize", *map(str, arguments)]) == 2, message
        error = capsys.readouterr().err
        assert message in error and error.startswith("hf-evolution quantize: error:"), error
        assert error.count("\n") == 1, "one line"
    assert not (tmp_path / "out").exists() and (foreign / "notes.txt").read_text() == "mine"
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []
