"""Dynamic int8 quantization (hf_evolution.deploy.quantization): every recurrent family, the padding and decoding paths,
the saved folder and `hf-evolution quantize`.

Tolerance: int8 weights and 8-bit dynamic activations (per tensor) cost each matrix product about 1/127 of its largest
values, and the recurrence compounds that over the steps. At random init the tiny models' logits are near zero (1e-3
for the LSTM), where this weighs most: over five seeds their logits are 1-6% off the float ones (relative Frobenius
error), so 8% is the bound. Argmax agreement is no test at random init: near-uniform logits flip under any rounding.
The accuracy figure that counts is the trained `small` LSTM's validation perplexity in benchmarks/quantization.py; here
a tiny LSTM trained for a moment on a learnable stream stands for it. Identity is asserted where the same int8 weights
see the same calls (save/load, generate, padding that never reaches the kernels), and between a tied embedding and the
head whose rows it is made from."""

import json
import math
import shutil

import numpy as np
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
    Int8Embedding,
    load_quantized,
    quantization_summary,
    quantize_dynamic_int8,
    quantized_state_dict,
    save_quantized,
)
from hf_evolution.evaluation import stateful_loss
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
    assert nn.Embedding not in kinds
    assert isinstance(quantized.lm_head, nnqd.Linear) and isinstance(quantized.model.embeddings, Int8Embedding)
    recurrent = [getattr(layer, "rnn", None) for layer in quantized.model.layers]
    expected = {"lstm": nnqd.LSTM, "gru": nnqd.GRU, "rnn": nn.RNN}.get(model_type)
    if expected is not None:  # torch has no dynamic quantized nn.RNN: the RNN family keeps float recurrent weights
        assert all(type(rnn) is expected for rnn in recurrent)
    summary = quantization_summary(quantized)
    if model_type == "rnn":
        assert any("no dynamic quantized nn.RNN" in why for why in summary["float"].values())
    assert (
        "lm_head" in summary["int8"]
        and summary["int8"]["model.embeddings"] == "Embedding: lm_head's rows, stored once"
    )
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
    assert type(quantized.model.embeddings) is nn.Embedding
    assert isinstance(quantized.model.layers[0].rnn, nnqd.LSTM)
    # An embedding of its own is int8 whatever the head: weight-only, a float scale and zero point per row.
    untied = quantize_dynamic_int8(make_model("lstm", tie_word_embeddings=False), include_head=False)
    assert type(untied.lm_head) is nn.Linear and isinstance(untied.model.embeddings, Int8Embedding)
    assert untied.model.embeddings.weight.qscheme() == torch.per_channel_affine_float_qparams
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
def test_the_saved_weights_are_at_most_035x_of_the_float_safetensors(model_type, tmp_path):
    """At the `small` size and a vocabulary of 8,192, where the embedding is most of the model: the file holds the
    vocabulary matrix once, as int8 (0.28x measured). The RNN family keeps float recurrent weights (0.46x). With the
    head kept float, the tied matrix stays float32 and the file shrinks by the recurrent layers alone (0.80x)."""
    model = build_model(model_type, "lm", "small", 8192).eval()
    model.save_pretrained(tmp_path / "float")
    float_bytes = (tmp_path / "float" / "model.safetensors").stat().st_size
    sizes = {}
    for include_head in (True, False):
        folder = save_quantized(
            quantize_dynamic_int8(model, include_head=include_head), None, tmp_path / str(include_head)
        )
        sizes[include_head] = (folder / WEIGHTS_NAME).stat().st_size / float_bytes
    assert sizes[True] <= (0.5 if model_type == "rnn" else 0.35)
    assert sizes[False] < 1.0


def assert_embedding_is_the_heads_rows(model):
    """The tied embedding holds the head's int8 rows + 128 with the same scales, so each looks up the floats the head's
    row dequantizes to, bit for bit."""
    head, rows = model.lm_head.weight(), model.model.embeddings.weight
    assert head.qscheme() == torch.per_channel_affine and not head.q_per_channel_zero_points().any()
    assert rows.dtype == torch.quint8 and rows.qscheme() == torch.per_channel_affine_float_qparams
    assert torch.equal(rows.int_repr().int(), head.int_repr().int() + 128)
    assert torch.equal(rows.q_per_channel_scales().double(), head.q_per_channel_scales().double())
    assert torch.equal(rows.q_per_channel_zero_points(), torch.full_like(rows.q_per_channel_zero_points(), 128))
    every_token = torch.arange(head.shape[0])
    assert torch.equal(model.model.embeddings(every_token), head.dequantize())


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
def test_a_tied_embedding_is_the_heads_rows_stored_once_and_rebuilt_exactly(tmp_path):
    quantized = quantize_dynamic_int8(make_model("lstm"))
    assert_embedding_is_the_heads_rows(quantized)
    folder = save_quantized(quantized, None, tmp_path / "int8")
    saved = torch.load(folder / WEIGHTS_NAME, weights_only=True)
    assert not any(key.startswith("model.embeddings._packed_params") for key in saved), "the rows are stored once"
    loaded = load_quantized(folder)
    assert_embedding_is_the_heads_rows(loaded)
    for before, after in (
        (quantized.model.embeddings.weight, loaded.model.embeddings.weight),
        (quantized.lm_head.weight(), loaded.lm_head.weight()),
    ):
        assert torch.equal(before.int_repr(), after.int_repr())
        assert torch.equal(before.q_per_channel_scales(), after.q_per_channel_scales())
    # An untied embedding has rows of its own, quantized on their own, saved beside the head's.
    untied = quantize_dynamic_int8(make_model("lstm", tie_word_embeddings=False))
    rows = untied.model.embeddings.weight
    assert (
        rows.qscheme() == torch.per_channel_affine_float_qparams and rows.shape[0] == untied.lm_head.weight().shape[0]
    )
    reloaded = load_quantized(save_quantized(untied, None, tmp_path / "untied"))
    assert torch.equal(reloaded.model.embeddings.weight.int_repr(), rows.int_repr())
    assert torch.equal(reloaded.model.embeddings.weight.dequantize(), rows.dequantize())


@pytest.mark.parametrize("model_type", FAMILIES)
def test_a_loaded_int8_model_generates_what_the_model_in_memory_does(model_type, tmp_path):
    quantized = quantize_dynamic_int8(make_model(model_type, **NO_EOS))
    loaded = load_quantized(save_quantized(quantized, None, tmp_path / "int8"))
    prompt = ids(2, 6, seed=3)
    kwargs = {
        "max_new_tokens": 12,
        "do_sample": False,
        "pad_token_id": 0,
        "output_logits": True,
        "return_dict_in_generate": True,
    }
    expected, generated = quantized.generate(prompt, **kwargs), loaded.generate(prompt, **kwargs)
    assert torch.equal(generated.sequences, expected.sequences)
    assert torch.equal(torch.stack(generated.logits), torch.stack(expected.logits))


def markov_stream(length: int, seed: int = 0) -> np.ndarray:
    """A stream a tiny model learns in a moment: 20 tokens, each followed by one of 2 of its own (perplexity 2)."""
    generator = torch.Generator().manual_seed(seed)
    successors = torch.randint(5, 25, (25, 2), generator=generator)
    choices = torch.randint(0, 2, (length,), generator=generator).tolist()
    tokens = [5]
    for choice in choices[1:]:
        tokens.append(int(successors[tokens[-1], choice]))
    return np.array(tokens)


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
def test_a_trained_model_loaded_in_int8_keeps_its_perplexity(tmp_path):
    """A tiny LSTM trained to a perplexity near 2 (uniform over its 320 tokens: 320): the int8 model read back from
    its folder scores the held-out stream within 1% of the float one (0.25% measured)."""
    model = make_model("lstm")
    stream = markov_stream(6144)
    batch, held_out = torch.tensor(stream[:4096]).view(8, -1), stream[4096:]
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    model.train()
    for step in range(300):
        begin = (step * 32) % (batch.shape[1] - 33)
        loss = model(batch[:, begin : begin + 32], labels=batch[:, begin : begin + 32]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    loaded = load_quantized(save_quantized(quantize_dynamic_int8(model), None, tmp_path / "int8"))
    perplexity = {
        name: math.exp(total / count)
        for name, each in (("float", model), ("int8", loaded))
        for total, count in [stateful_loss(each, held_out, block_size=32, rows=4)]
    }
    assert perplexity["float"] < 2.5, perplexity
    assert abs(perplexity["int8"] / perplexity["float"] - 1) < 0.01, perplexity


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
    assert "bytes (float32) ->" in printed and "LSTM x2 (model.layers.0.rnn, model.layers.1.rnn)" in printed
    assert "int8: Embedding x1 (model.embeddings): lm_head's rows, stored once;" in printed
    assert "float: none" in printed
    loaded = load_quantized(output)
    assert isinstance(loaded.model.layers[0].rnn, nnqd.LSTM) and (output / "tokenizer.json").is_file()
    assert main(["quantize", str(float_folder), str(output)]) == 2
    assert "Pass --overwrite" in capsys.readouterr().err
    assert main(["quantize", "--keep-float-head", "--overwrite", str(float_folder), str(output)]) == 0
    printed = capsys.readouterr().out
    assert "Linear x1 (lm_head): the head, kept float" in printed
    assert "Embedding x1 (model.embeddings): tied to the float head" in printed
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
