"""`hf-evolution convert`: a checkpoint of PyTorch's `word_language_model` example as a saved hf_evolution folder.

The example (github.com/pytorch/examples, `word_language_model`) trains `model.RNNModel`: an `nn.Embedding` encoder,
an `nn.LSTM`, `nn.GRU` or `nn.RNN` stack (`--model LSTM, GRU, RNN_TANH, RNN_RELU`) and an `nn.Linear` decoder, tied to
the encoder with `--tied`. Its `main.py` saves the whole pickled module (`torch.save(model, f)`); a state dict
(`torch.save(model.state_dict(), f)`) holds the same weights without code. The conversion maps them onto an
hf_evolution causal LM of the same family and shape, so that its logits equal the example's (before the example's
log-softmax) token for token, and its `cache` carries the state as the example's `hidden` does.

The vocabulary is the example's `data.Dictionary`: either a text file with one word per line in id order, or the data
folder itself (train.txt, valid.txt, test.txt), from which the words are rebuilt as `data.Corpus` does (in order of
first appearance, `line.split() + ['<eos>']` per line). The folder gets a word-level tokenizer that encodes text as the
example does: split on whitespace, a newline becomes `<eos>`.

Everything is checked before anything is written, and the folder is built beside the output folder and renamed into
place, so a failure leaves no half-written model.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import re
import struct
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..runs import check_output_folder, write_folder_atomically

RNN_TYPES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
FAMILY_OF = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn", "RNN_RELU": "rnn"}
CORPUS_FILES = ("train.txt", "valid.txt", "test.txt")  # the order in which data.Corpus reads them
EOS, UNK = "<eos>", "<unk>"
EXAMPLE_URL = "https://github.com/pytorch/examples/tree/main/word_language_model"
RNN_ONLY = "hf_evolution converts the example's RNNModel (LSTM, GRU, RNN_TANH, RNN_RELU) only"


@dataclass
class WordLanguageModel:
    """What a checkpoint says about the example's `RNNModel`: its weights (the example's key names) and shape."""

    rnn_type: str
    ntoken: int
    ninp: int
    nhid: int
    nlayers: int
    tied: bool
    dropout: float | None  # known for a pickled module (`drop.p`), not for a state dict
    state_dict: dict[str, torch.Tensor]


def convert_word_language_model(
    checkpoint: str | os.PathLike,
    vocabulary: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    trust_pickle: bool = False,
    rnn_type: str | None = None,
    code_dir: str | os.PathLike | None = None,
    dropout: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert a `word_language_model` checkpoint and its vocabulary into an hf_evolution folder; returns the folder.

    Args:
        checkpoint: A state dict of `RNNModel`, or the whole pickled module that the example's `main.py` saves.
        vocabulary: A text file with one word per line in id order, or the example's data folder (train.txt,
            valid.txt, test.txt), rebuilt exactly as `data.Corpus` does. Its size must be the checkpoint's `ntoken`.
        output_dir: The folder to write: new, empty, or (with `overwrite`) one that holds an earlier output of
            hf_evolution. A folder holding anything else is refused.
        trust_pickle: Allow a pickled module. Unpickling runs code named in the file, so only for files you trust;
            without it only plain tensors are read (`weights_only=True`).
        rnn_type: The example's `--model` (LSTM, GRU, RNN_TANH, RNN_RELU). LSTM and GRU are told from the weights;
            a plain RNN's weights do not say whether its units are tanh or relu, so a state dict of one needs it.
        code_dir: A folder to import the pickled module's class from (the folder of the example's `model.py`).
        dropout: The dropout of the converted model, for further training (input and hidden dropout). Default: a
            pickled module's own `drop.p`, 0 for a state dict. It never changes the logits of the saved model.
        overwrite: Replace an earlier output of hf_evolution in `output_dir`.
    """
    checkpoint, vocabulary, output_dir = Path(checkpoint), Path(vocabulary), Path(output_dir).expanduser().absolute()
    if rnn_type is not None and rnn_type not in RNN_TYPES:
        raise ValueError(
            f"--rnn-type must be one of {', '.join(RNN_TYPES)} (the example's --model), got {rnn_type!r}."
        )
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise ValueError(f"--dropout must be a probability in [0, 1), got {dropout}.")
    if not checkpoint.is_file():
        raise FileNotFoundError(f"No checkpoint file {checkpoint}.")
    if not vocabulary.exists():
        raise FileNotFoundError(f"No vocabulary {vocabulary}: give a file with one word per line, or the data folder.")
    check_output_folder(output_dir, overwrite=overwrite, protected=[checkpoint, vocabulary])

    source = load_checkpoint(checkpoint, trust_pickle=trust_pickle, rnn_type=rnn_type, code_dir=code_dir)
    words = read_vocabulary(vocabulary)
    if len(words) != source.ntoken:
        raise ValueError(
            f"The vocabulary {vocabulary} has {len(words)} words but the checkpoint was trained on {source.ntoken} "
            "(ntoken, the rows of encoder.weight); give the vocabulary of the data the checkpoint was trained on."
        )
    if dropout is not None:
        source.dropout = dropout
    model = build_model(source, words)
    tokenizer = build_tokenizer(words)

    def write(temporary: Path) -> None:
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        (temporary / "README.md").write_text(model_card(model, source, checkpoint, vocabulary, output_dir.name))

    return write_folder_atomically(output_dir, write)


# --- the checkpoint -------------------------------------------------------------------------------------------------


def load_checkpoint(
    path: Path, *, trust_pickle: bool = False, rnn_type: str | None = None, code_dir: str | os.PathLike | None = None
) -> WordLanguageModel:
    """Read a state dict (plain tensors only), or a pickled `RNNModel` when `trust_pickle`, and check it is one."""
    check_complete(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if found is None:
            raise ValueError(unreadable(path, error)) from None
        if not trust_pickle:
            raise ValueError(
                f"{path} holds pickled Python objects ({found.group(1)}; the example's main.py saves the whole "
                "module), and unpickling runs code the file names. Pass --trust-pickle if you trust the file, or "
                "save a state dict instead: torch.save(model.state_dict(), f)."
            ) from None
        loaded = unpickle(path, code_dir)
    except (RuntimeError, *CUT_SHORT) as error:  # not a torch file at all, or one that ends early
        raise ValueError(unreadable(path, error)) from None
    if isinstance(loaded, nn.Module):
        return from_module(loaded, path, rnn_type)
    if isinstance(loaded, dict) and all(isinstance(value, torch.Tensor) for value in loaded.values()):
        return from_state_dict(dict(loaded), path, rnn_type)
    raise ValueError(
        f"{path} holds a {type(loaded).__name__}, not the example's RNNModel nor its state dict; {RNN_ONLY}."
    )


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6; older files are a bare pickle
# What torch.load raises, besides RuntimeError, on a legacy (pickle) file that ends early: its reads run out of bytes.
CUT_SHORT = (EOFError, IndexError, struct.error)


def check_complete(path: Path) -> None:
    """Refuse an empty checkpoint, or one in torch's zip format whose end is missing, before unpickling: torch's own
    errors for those (EOFError, `[Errno 22] Invalid argument`) name no file. A zip archive ends with its directory,
    so a file cut anywhere has none for `zipfile` to read; a legacy file has no such check and fails while loading."""
    with open(path, "rb") as file:
        magic = file.read(len(ZIP_MAGIC))
    if not magic:
        raise ValueError(f"{path} is empty, not a checkpoint; copy or save it again.")
    if magic == ZIP_MAGIC:
        try:
            zipfile.ZipFile(path).close()
        except zipfile.BadZipFile:
            raise ValueError(
                f"{path} is truncated: it begins as the zip archive torch.save writes, but the archive's end (its "
                "directory) is missing; copy or save it again."
            ) from None


def unreadable(path: Path, error: BaseException) -> str:
    return f"{path} is truncated, damaged or not a checkpoint that torch.load can read ({last_line(error)})."


def last_line(error: BaseException) -> str:
    """The last line of torch's messages, which say what went wrong after a page of advice."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def unpickle(path: Path, code_dir: str | os.PathLike | None):
    """`torch.load` with code, the class imported from `code_dir` when given (the example imports `model`)."""
    added = str(Path(code_dir).resolve()) if code_dir is not None else None
    if added is not None:
        if not Path(added).is_dir():
            raise FileNotFoundError(f"--code-dir {code_dir} is not a folder.")
        sys.path.insert(0, added)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (ImportError, AttributeError) as error:
        where = f"in --code-dir {code_dir}" if added else "here; pass --code-dir with the folder of its model.py"
        raise ValueError(
            f"{path} is a pickled module whose class Python cannot import {where} ({last_line(error)}). Or save a "
            "state dict instead: torch.save(model.state_dict(), f)."
        ) from None
    except (pickle.UnpicklingError, RuntimeError, *CUT_SHORT) as error:
        raise ValueError(unreadable(path, error)) from None
    finally:
        if added is not None:
            with contextlib.suppress(ValueError):
                sys.path.remove(added)


def is_transformer(keys) -> bool:
    """The example's TransformerModel: `input_emb`, `pos_encoder` and `nn.Transformer`'s encoder layers."""
    return any(key == "input_emb.weight" or key.startswith(("pos_encoder.", "encoder.layers.")) for key in keys)


def from_module(module: nn.Module, path: Path, rnn_type: str | None) -> WordLanguageModel:
    """A pickled module: the weights, plus what only the module knows (relu or tanh units, dropout, tying)."""
    if isinstance(module, nn.Transformer) or getattr(module, "model_type", None) == "Transformer":
        raise ValueError(
            f"{path} holds the example's Transformer model ({type(module).__name__}), not an RNN; {RNN_ONLY}."
        )
    rnn = getattr(module, "rnn", None)
    if not isinstance(rnn, (nn.LSTM, nn.GRU, nn.RNN)) or not isinstance(
        getattr(module, "encoder", None), nn.Embedding
    ):
        raise ValueError(
            f"{path} holds a {type(module).__name__} without the example's encoder (nn.Embedding) and rnn "
            f"(nn.LSTM, nn.GRU or nn.RNN); {RNN_ONLY}."
        )
    if isinstance(rnn, nn.LSTM):
        found = "LSTM"
    elif isinstance(rnn, nn.GRU):
        found = "GRU"
    else:
        found = "RNN_RELU" if rnn.nonlinearity == "relu" else "RNN_TANH"
    if rnn_type is not None and rnn_type != found:
        raise ValueError(f"--rnn-type {rnn_type} was given, but {path} holds a {found} model; leave --rnn-type out.")
    drop = getattr(module, "drop", None)
    dropout = drop.p if isinstance(drop, nn.Dropout) else None
    source = from_state_dict(module.state_dict(), path, found)
    decoder = getattr(module, "decoder", None)
    source.tied = decoder is not None and decoder.weight is module.encoder.weight
    source.dropout = dropout
    return source


def from_state_dict(state_dict: dict[str, torch.Tensor], path: Path, rnn_type: str | None) -> WordLanguageModel:
    """Check the keys and shapes of `RNNModel`'s state dict and read its family, sizes and tying from them."""
    keys = set(state_dict)
    if is_transformer(keys):
        raise ValueError(f"{path} holds the example's Transformer model (TransformerModel), not an RNN; {RNN_ONLY}.")
    nlayers = 0
    while f"rnn.weight_ih_l{nlayers}" in keys:
        nlayers += 1
    needed = ["encoder.weight", "decoder.weight", "decoder.bias"]
    needed += [f"rnn.{kind}_l{k}" for k in range(nlayers) for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    missing, unexpected = sorted(set(needed) - keys), sorted(keys - set(needed))
    if nlayers == 0 or missing or unexpected:
        details = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing[:4])}" if missing else "",
                f"unexpected {', '.join(unexpected[:4])}" if unexpected else "",
                "no rnn.weight_ih_l0" if nlayers == 0 else "",
            )
            if part
        )
        raise ValueError(f"{path} is not a state dict of the example's RNNModel ({details}); {RNN_ONLY}.")
    for key in ("encoder.weight", "rnn.weight_hh_l0"):
        if state_dict[key].dim() != 2 or not state_dict[key].is_floating_point() or 0 in state_dict[key].shape:
            raise ValueError(f"{path}: {key} is a {tuple(state_dict[key].shape)} tensor, not a matrix of weights.")
    ntoken, ninp = state_dict["encoder.weight"].shape
    nhid = state_dict["rnn.weight_hh_l0"].shape[1]
    gates, remainder = divmod(state_dict["rnn.weight_hh_l0"].shape[0], nhid)
    found = {4: "LSTM", 3: "GRU", 1: "RNN"}.get(gates) if remainder == 0 else None
    if found is None:
        raise ValueError(
            f"{path}: rnn.weight_hh_l0 has shape {tuple(state_dict['rnn.weight_hh_l0'].shape)}, no LSTM, GRU or RNN."
        )
    if found == "RNN":
        if rnn_type not in ("RNN_TANH", "RNN_RELU"):
            raise ValueError(
                f"{path} holds a plain RNN, whose weights do not say whether its units are tanh or relu; pass "
                "--rnn-type RNN_TANH or RNN_RELU (the --model it was trained with)."
            )
        found = rnn_type
    elif rnn_type is not None and rnn_type != found:
        raise ValueError(f"--rnn-type {rnn_type} was given, but the weights in {path} are a {found}'s; leave it out.")
    shapes = {"encoder.weight": (ntoken, ninp), "decoder.weight": (ntoken, nhid), "decoder.bias": (ntoken,)}
    for k in range(nlayers):
        shapes[f"rnn.weight_ih_l{k}"] = (gates * nhid, ninp if k == 0 else nhid)
        shapes[f"rnn.weight_hh_l{k}"] = (gates * nhid, nhid)
        shapes[f"rnn.bias_ih_l{k}"] = shapes[f"rnn.bias_hh_l{k}"] = (gates * nhid,)
    for key, shape in shapes.items():
        if tuple(state_dict[key].shape) != shape:
            raise ValueError(
                f"{path}: {key} has shape {tuple(state_dict[key].shape)}, but a {found} with ntoken={ntoken}, "
                f"ninp={ninp}, nhid={nhid} has {shape}; the checkpoint is damaged or not the example's RNNModel."
            )
    encoder, decoder = state_dict["encoder.weight"], state_dict["decoder.weight"]
    # `--tied` makes both keys one tensor; torch.save keeps it shared, and equal values convert the same either way.
    tied = encoder.shape == decoder.shape and (
        encoder.data_ptr() == decoder.data_ptr() or torch.equal(encoder, decoder)
    )
    return WordLanguageModel(found, ntoken, ninp, nhid, nlayers, tied, None, state_dict)


# --- the vocabulary -------------------------------------------------------------------------------------------------


def read_vocabulary(path: Path) -> list[str]:
    """The example's `Dictionary.idx2word`: from its data folder, or from a file with one word per line in id order."""
    if path.is_dir():
        return corpus_words(path)
    lines = path.read_text(encoding="utf8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    words = [line.removesuffix("\r") for line in lines]
    for number, word in enumerate(words, start=1):
        if not word or word.split() != [word]:
            raise ValueError(
                f"{path}, line {number}: {word!r} is not a word; a vocabulary file has one word per line, in id order "
                "(or give the data folder with train.txt, valid.txt and test.txt)."
            )
    duplicates = sorted({word for word in words if words.count(word) > 1}) if len(set(words)) != len(words) else []
    if duplicates:
        raise ValueError(f"{path} lists {', '.join(duplicates[:5])} more than once; each word needs one id.")
    return words


def corpus_words(folder: Path) -> list[str]:
    """The words of `data.Corpus(folder)`, in its order: first appearance over train, valid and test, each line read
    as `line.split() + ['<eos>']` (text mode, so \\r\\n and \\r end lines too)."""
    missing = [name for name in CORPUS_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {', '.join(missing)}; the example's data folder holds train.txt, valid.txt and test.txt "
            "(or give a file with one word per line)."
        )
    ids: dict[str, int] = {}
    for name in CORPUS_FILES:
        with open(folder / name, encoding="utf8") as file:
            for line in file:
                for word in [*line.split(), EOS]:
                    ids.setdefault(word, len(ids))
    return list(ids)


# --- the converted model and tokenizer ------------------------------------------------------------------------------


def build_model(source: WordLanguageModel, words: list[str]):
    """The hf_evolution causal LM of the same family and shape, holding the checkpoint's weights (strict keys)."""
    from transformers import AutoModelForCausalLM

    from ..families import FAMILIES

    config_class = FAMILIES[FAMILY_OF[source.rnn_type]].config_class
    extra = (
        {"nonlinearity": "relu" if source.rnn_type == "RNN_RELU" else "tanh"}
        if source.rnn_type.startswith("RNN")
        else {}
    )
    dropout = source.dropout or 0.0
    config = config_class(
        vocab_size=source.ntoken,
        embedding_size=source.ninp,
        hidden_size=source.nhid,
        num_hidden_layers=source.nlayers,
        tie_word_embeddings=source.tied,
        # The example drops embeddings, outputs between layers and the last layer's output, all with one p.
        input_dropout=dropout,
        hidden_dropout=dropout,
        embedding_dropout=0.0,
        weight_dropout=0.0,
        recurrent_initialization="torch",  # as the example starts; only matters for resize_token_embeddings
        eos_token_id=words.index(EOS) if EOS in words else None,
        **extra,
    )
    model = AutoModelForCausalLM.from_config(config)
    weights = source.state_dict
    mapped = {
        "model.embeddings.weight": weights["encoder.weight"],
        "lm_head.weight": weights["decoder.weight"],
        "lm_head.bias": weights["decoder.bias"],
    }
    for k in range(source.nlayers):
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            mapped[f"model.layers.{k}.rnn.{kind}_l0"] = weights[f"rnn.{kind}_l{k}"]
    dtype = weights["encoder.weight"].dtype
    if dtype.is_floating_point and dtype != torch.float32:
        model.to(dtype)
    model.load_state_dict(mapped, strict=True)
    if source.tied and model.lm_head.weight is not model.model.embeddings.weight:
        raise RuntimeError("The converted model lost the tying of its embeddings; please report this.")
    return model.eval()


def build_tokenizer(words: list[str]):
    """A word-level tokenizer that encodes as `data.Corpus` does: `str.split()` words, a newline as `<eos>`."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from ..tokenization import DEFAULT_MODEL_MAX_LENGTH

    vocab = {word: index for index, word in enumerate(words)}
    tokenizer = Tokenizer(
        models.WordLevel(vocab, unk_token=UNK)
    )  # without <unk> in the vocabulary, unknown words fail
    rules = [normalizers.Replace(Regex(r"[\x1c-\x1f]"), " ")]  # whitespace to str.split(), not to the Rust splitter
    if EOS in vocab:
        rules.insert(0, normalizers.Replace(Regex(r"\r\n?|\n"), f" {EOS} "))
    tokenizer.normalizer = normalizers.Sequence(rules)
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    special = {"eos_token": EOS} if EOS in vocab else {}
    if UNK in vocab:
        special["unk_token"] = UNK
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=DEFAULT_MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
        **special,
    )


def model_card(model, source: WordLanguageModel, checkpoint: Path, vocabulary: Path, name: str) -> str:
    from ..families import describe_model

    if source.dropout:
        dropout = f"dropout {source.dropout} (locked: one mask per sequence, where the example draws one per token)"
    else:
        dropout = "no dropout (pass --dropout to set one; a state dict does not record the example's)"
    tied = " --tied" if source.tied else ""
    return f"""---
library_name: transformers
tags: [hf-evolution, {model.config.model_type}, recurrent, word-language-model]
---

# {name}

{describe_model(model)}.

A checkpoint of PyTorch's [word_language_model example]({EXAMPLE_URL}) (`--model {source.rnn_type}{tied}`),
`{checkpoint.name}`, converted by `hf-evolution convert` with the vocabulary of `{vocabulary.name}` ({source.ntoken}
words). Its logits equal the example's before its log-softmax, and its `cache` carries the state as the example's
`hidden` does. Training it further uses {dropout}.

The tokenizer encodes text as the example's `data.Corpus`: words split on whitespace, a newline as `<eos>`. Words
outside the vocabulary become `<unk>` if the vocabulary has it (PTB and WikiText-2 do); otherwise encoding fails.

```python
import hf_evolution  # or trust_remote_code=True where it is not installed
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{name}")
tokenizer = AutoTokenizer.from_pretrained("{name}")
ids = tokenizer("the meaning of", return_tensors="pt").input_ids
print(tokenizer.decode(model.generate(ids, max_new_tokens=20, do_sample=True)[0]))
```
"""


# --- the command line -----------------------------------------------------------------------------------------------


def add_parser(subcommands) -> None:
    parser = subcommands.add_parser(
        "convert",
        help="import a checkpoint of PyTorch's word_language_model example as an hf_evolution folder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="the example's model.pt (a pickled module) or a state dict of RNNModel")
    parser.add_argument("output_dir", help="the folder to write (new or empty, or an earlier output with --overwrite)")
    parser.add_argument(
        "--vocab",
        required=True,
        help="a file with one word per line in id order, or the data folder (train.txt, valid.txt, test.txt)",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow a pickled module (what main.py saves); unpickling runs code, so only for files you trust",
    )
    parser.add_argument(
        "--rnn-type",
        choices=RNN_TYPES,
        help="the example's --model; needed for a plain RNN's state dict (tanh or relu), read from the weights otherwise",
    )
    parser.add_argument(
        "--code-dir", help="folder of the example's model.py, to unpickle a module with --trust-pickle"
    )
    parser.add_argument(
        "--dropout", type=float, help="dropout for further training (default: the pickled module's, else 0)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier output of hf_evolution there")
    parser.set_defaults(run=run)


def run(args) -> int:
    folder = convert_word_language_model(
        args.checkpoint,
        args.vocab,
        args.output_dir,
        trust_pickle=args.trust_pickle,
        rnn_type=args.rnn_type,
        code_dir=args.code_dir,
        dropout=args.dropout,
        overwrite=args.overwrite,
    )
    print(f"Converted {args.checkpoint} into {folder} (load it with AutoModelForCausalLM.from_pretrained).")
    return 0
