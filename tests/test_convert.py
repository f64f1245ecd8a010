"""`hf-evolution convert`: checkpoints of PyTorch's word_language_model example (built here with the example's classes,
`tests/word_language_model/`) become hf_evolution folders with the same logits, state carrying and token ids."""

import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_evolution  # noqa: F401  (registers the Auto classes)
from hf_evolution.cli import main
from hf_evolution.deploy.conversion import convert_word_language_model

# The example's own classes warn about dropout in a 1-layer stack and about nested tensors.
pytestmark = pytest.mark.filterwarnings("ignore:dropout option adds dropout", "ignore:enable_nested_tensor")
EXAMPLE = Path(__file__).resolve().parent / "word_language_model"
TRAIN = "the cat sat on the mat\n\nthe dog  ran\tin the park\n"
VALID = "a cat ran\r\nthe park \x1c sat\n"  # \r\n and \x1c: text mode ends the line, str.split() splits there
TEST = "the mat <unk> a dog"  # no final newline: data.Corpus still ends the line with <eos>


@pytest.fixture
def example(monkeypatch):
    """The example's `model` and `data` modules, imported as its main.py imports them."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    for name in ("model", "data"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import data
    import model

    yield model, data
    for name in ("model", "data"):
        sys.modules.pop(name, None)


@pytest.fixture
def corpus_dir(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for name, text in (("train.txt", TRAIN), ("valid.txt", VALID), ("test.txt", TEST)):
        (folder / name).write_bytes(text.encode())
    return folder


def make_checkpoint(example, corpus_dir, tmp_path, rnn_type, *, ninp=8, nhid=8, nlayers=2, tied=False, pickled=False):
    model_module, data_module = example
    ntoken = len(data_module.Corpus(str(corpus_dir)).dictionary)
    torch.manual_seed(0)
    model = model_module.RNNModel(rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.25, tie_weights=tied).eval()
    with torch.no_grad():  # non-zero biases, so a bias mapped to the wrong place shows
        model.decoder.bias.uniform_(-0.5, 0.5)
    path = tmp_path / f"{rnn_type}.pt"
    torch.save(model if pickled else model.state_dict(), path)
    return model, path


def example_logits(model, ids, hidden):
    """The example's forward before its log-softmax, batch first (the example runs time-major)."""
    output, hidden = model.rnn(model.encoder(ids.t()), hidden)
    return model.decoder(output).transpose(0, 1), hidden


CASES = [
    ("LSTM", dict(tied=True), False),
    ("LSTM", dict(ninp=6, nhid=10), True),
    ("GRU", dict(ninp=6, nhid=10), False),
    ("GRU", dict(tied=True, nlayers=1), True),
    ("RNN_TANH", dict(nlayers=1), False),
    ("RNN_RELU", dict(tied=True), True),
]


@pytest.mark.parametrize(("rnn_type", "shape", "pickled"), CASES)
def test_logits_and_carried_state_match_the_example(example, corpus_dir, tmp_path, rnn_type, shape, pickled):
    original, checkpoint = make_checkpoint(example, corpus_dir, tmp_path, rnn_type, pickled=pickled, **shape)
    folder = convert_word_language_model(
        checkpoint,
        corpus_dir,
        tmp_path / "out",
        trust_pickle=pickled,
        rnn_type=None if pickled or rnn_type in ("LSTM", "GRU") else rnn_type,
    )
    converted = AutoModelForCausalLM.from_pretrained(folder).eval()
    config = converted.config
    assert config.model_type == {"LSTM": "lstm", "GRU": "gru"}.get(rnn_type, "rnn")
    assert config.tie_word_embeddings is shape.get("tied", False)
    assert (converted.lm_head.weight is converted.model.embeddings.weight) is shape.get("tied", False)
    assert config.input_dropout == config.hidden_dropout == (0.25 if pickled else 0.0)
    if config.model_type == "rnn":
        assert config.nonlinearity == rnn_type.removeprefix("RNN_").lower()

    torch.manual_seed(1)
    ids = torch.randint(0, original.ntoken, (3, 11))
    first, second = ids[:, :6], ids[:, 6:]
    with torch.no_grad():
        hidden = original.init_hidden(3)
        expected_first, hidden = example_logits(original, first, hidden)
        expected_second, _ = example_logits(original, second, hidden)
        log_probs, _ = original(first.t(), original.init_hidden(3))  # the example's own forward
        out = converted(first, use_cache=True)
        out_second = converted(second, cache=out.cache)
        whole = converted(ids).logits
    torch.testing.assert_close(out.logits, expected_first, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_second.logits, expected_second, atol=1e-5, rtol=0)
    torch.testing.assert_close(whole, torch.cat([expected_first, expected_second], dim=1), atol=1e-5, rtol=0)
    ours = out.logits.log_softmax(-1).transpose(0, 1).reshape(-1, original.ntoken)
    torch.testing.assert_close(ours, log_probs, atol=1e-5, rtol=0)


def test_tokenizer_encodes_as_data_corpus(example, corpus_dir, tmp_path):
    _, data_module = example
    corpus = data_module.Corpus(str(corpus_dir))
    _, checkpoint = make_checkpoint(example, corpus_dir, tmp_path, "GRU")
    from_folder = convert_word_language_model(checkpoint, corpus_dir, tmp_path / "from-folder")
    word_list = tmp_path / "vocab.txt"
    word_list.write_text("\n".join(corpus.dictionary.idx2word) + "\n")
    from_file = convert_word_language_model(checkpoint, word_list, tmp_path / "from-file")

    for folder in (from_folder, from_file):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        assert tokenizer.get_vocab() == corpus.dictionary.word2idx
        assert tokenizer.eos_token == "<eos>" and tokenizer.unk_token == "<unk>"
        assert tokenizer(TRAIN).input_ids == corpus.train.tolist()
        assert tokenizer(VALID).input_ids == corpus.valid.tolist()
        assert tokenizer(TEST + "\n").input_ids == corpus.test.tolist()
        assert tokenizer("the cat\n").input_ids[-1] == corpus.dictionary.word2idx["<eos>"]
        assert tokenizer("the zebra").input_ids == [corpus.dictionary.word2idx[word] for word in ("the", "<unk>")]
        model = AutoModelForCausalLM.from_pretrained(folder)
        assert model.config.eos_token_id == corpus.dictionary.word2idx["<eos>"]
    assert (from_folder / "README.md").read_text().startswith("---\nlibrary_name: transformers")

    prompt = tokenizer("the cat", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert generated.shape == (1, 7)


def test_pickled_module_class_from_code_dir(example, corpus_dir, tmp_path, monkeypatch):
    """A pickled `model.RNNModel` where `model` is not importable: a clear error, and --code-dir finds it."""
    original, checkpoint = make_checkpoint(example, corpus_dir, tmp_path, "LSTM", pickled=True)
    monkeypatch.delitem(sys.modules, "model")
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry != str(EXAMPLE)])
    with pytest.raises(ValueError, match="cannot import here; pass --code-dir"):
        convert_word_language_model(checkpoint, corpus_dir, tmp_path / "out", trust_pickle=True)
    assert not (tmp_path / "out").exists()
    folder = convert_word_language_model(checkpoint, corpus_dir, tmp_path / "out", trust_pickle=True, code_dir=EXAMPLE)
    assert str(EXAMPLE) not in sys.path
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        expected, _ = example_logits(original, ids, original.init_hidden(1))
        torch.testing.assert_close(
            AutoModelForCausalLM.from_pretrained(folder)(ids).logits, expected, atol=1e-5, rtol=0
        )


def test_cli_converts_and_replaces_only_with_overwrite(example, corpus_dir, tmp_path, capsys):
    _, checkpoint = make_checkpoint(example, corpus_dir, tmp_path, "RNN_RELU", pickled=True)
    out = tmp_path / "out"
    command = ["convert", str(checkpoint), "--vocab", str(corpus_dir), str(out), "--trust-pickle"]
    assert main(command) == 0
    assert f"into {out}" in capsys.readouterr().out
    assert main(command) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*command, "--overwrite", "--dropout", "0.1"]) == 0
    assert AutoModelForCausalLM.from_pretrained(out).config.hidden_dropout == 0.1
    assert not [entry.name for entry in tmp_path.iterdir() if entry.name.startswith(".out.")]


def error_case(name, example, corpus_dir, tmp_path):
    """The arguments of a command that must fail, and words its message must hold."""
    model_module, data_module = example
    if name == "pickle without --trust-pickle":
        _, checkpoint = make_checkpoint(example, corpus_dir, tmp_path, "LSTM", pickled=True)
        return [str(checkpoint), "--vocab", str(corpus_dir)], "--trust-pickle"
    if name == "vocabulary size":
        _, checkpoint = make_checkpoint(example, corpus_dir, tmp_path, "LSTM")
        words = tmp_path / "vocab.txt"
        words.write_text("the\ncat\n<eos>\n")
        return [str(checkpoint), "--vocab", str(words)], "has 3 words but the checkpoint was trained on"
    if name in ("transformer", "pickled transformer"):
        ntoken = len(data_module.Corpus(str(corpus_dir)).dictionary)
        transformer = model_module.TransformerModel(ntoken, 8, 2, 16, 1)
        checkpoint = tmp_path / "transformer.pt"
        torch.save(transformer if name == "pickled transformer" else transformer.state_dict(), checkpoint)
        return [str(checkpoint), "--vocab", str(corpus_dir), "--trust-pickle"], "Transformer model"
    if name == "plain RNN without --rnn-type":
        _, checkpoint = make_checkpoint(example, corpus_dir, tmp_path, "RNN_TANH")
        return [str(checkpoint), "--vocab", str(corpus_dir)], "--rnn-type RNN_TANH or RNN_RELU"
    if name == "wrong --rnn-type":
        _, checkpoint = make_checkpoint(example, corpus_dir, tmp_path, "GRU")
        return [str(checkpoint), "--vocab", str(corpus_dir), "--rnn-type", "LSTM"], "a GRU's"
    if name == "foreign output folder":
        _, checkpoint = make_checkpoint(example, corpus_dir, tmp_path, "GRU")
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "notes.txt").write_text("mine")
        return [str(checkpoint), "--vocab", str(corpus_dir), "--overwrite"], "did not write (notes.txt)"
    if name == "missing corpus file":
        _, checkpoint = make_checkpoint(example, corpus_dir, tmp_path, "GRU")
        (corpus_dir / "test.txt").unlink()
        return [str(checkpoint), "--vocab", str(corpus_dir)], "lacks test.txt"
    if name == "not a checkpoint":
        checkpoint = tmp_path / "model.pt"
        checkpoint.write_bytes(b"not a checkpoint")
        return [str(checkpoint), "--vocab", str(corpus_dir), "--trust-pickle"], "not a checkpoint that torch.load"
    if name == "empty checkpoint":
        checkpoint = tmp_path / "model.pt"
        checkpoint.write_bytes(b"")
        return [str(checkpoint), "--vocab", str(corpus_dir), "--trust-pickle"], f"{checkpoint} is empty"
    if name in ("truncated checkpoint", "truncated pickled module", "truncated legacy checkpoint"):
        model, _ = make_checkpoint(example, corpus_dir, tmp_path, "LSTM")
        checkpoint = tmp_path / "model.pt"
        pickled = name == "truncated pickled module"
        # torch.save's zip format, or the bare pickle of torch before 1.6 (`_use_new_zipfile_serialization=False`).
        torch.save(
            model if pickled else model.state_dict(), checkpoint, _use_new_zipfile_serialization="legacy" not in name
        )
        whole = checkpoint.read_bytes()
        checkpoint.write_bytes(whole[: len(whole) // 2])  # an interrupted copy
        return [str(checkpoint), "--vocab", str(corpus_dir), "--trust-pickle"], f"{checkpoint} is truncated"
    raise AssertionError(name)


ERRORS = [
    "pickle without --trust-pickle",
    "vocabulary size",
    "transformer",
    "pickled transformer",
    "plain RNN without --rnn-type",
    "wrong --rnn-type",
    "foreign output folder",
    "missing corpus file",
    "not a checkpoint",
    "empty checkpoint",
    "truncated checkpoint",
    "truncated pickled module",
    "truncated legacy checkpoint",
]


@pytest.mark.parametrize("name", ERRORS)
def test_cli_refuses_bad_input_in_one_line_before_writing(example, corpus_dir, tmp_path, capsys, name):
    arguments, expected = error_case(name, example, corpus_dir, tmp_path)
    out = tmp_path / "out"
    before = sorted(path.name for path in out.iterdir()) if out.exists() else None
    assert main(["convert", *arguments[:1], str(out), *arguments[1:]]) == 2
    error = capsys.readouterr().err
    assert error.startswith("hf-evolution convert: error: ") and error.count("\n") == 1
    assert expected in error
    assert (sorted(path.name for path in out.iterdir()) if out.exists() else None) == before
    assert not [entry.name for entry in tmp_path.iterdir() if entry.name.startswith(".out.")]
