"""Shared tokenizers: every model in a comparison reads the same token ids.

Three kinds, trained with the ``tokenizers`` library on what they are given (pass the train split only, so
validation and test text never shapes the vocabulary) and wrapped as ``PreTrainedTokenizerFast``:

- ``"bpe"`` (default): byte-level BPE as in GPT-2, without a prefix space, so any text round-trips exactly.
- ``"word"``: word-level (split on whitespace and punctuation), for classic word-level LM results; rare words
  become ``<unk>``, so it does not round-trip.
- ``"char"``: one token per character; round-trips every character seen in training.

Default vocabulary sizes (measured on the BBC News splits of ``load_corpus()`` before its duplicate articles were
dropped, 686k train words; validation figures below; without the duplicates the word vocabulary has 14,466 words):

- bpe 8192: 1.43 tokens per word (4096 gives 1.62, 16384 gives 1.32). A larger vocabulary on a corpus this
  small mostly adds rare tokens with undertrained embeddings, while the embedding and softmax of a small RNN
  grow with it.
- word: every word seen at least 3 times (WikiText's rule), capped at 32768: 14,816 words on BBC News, 4.0%
  ``<unk>`` in validation (min_frequency 2: 19,550 words, 3.1%; 1: 30,991 words, 1.8%).
- char: every character seen (min_frequency 1), capped at 1024: 88 on BBC News.

Long documents are tokenised, and fed to training, in pieces of at most :data:`PIECE_CHARS` characters (see
:func:`text_pieces`): ``tokenizers`` holds about 100 bytes per character of what it is given at once, so a 44 MB
one-line file used to abort at 5 GB.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import datasets
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

TOKENIZER_KINDS = ("bpe", "word", "char")
SPECIAL_TOKENS = {
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "mask_token": "<mask>",
}
DEFAULT_VOCAB_SIZES = {"bpe": 8192, "word": 32768, "char": 1024}
DEFAULT_MIN_FREQUENCIES = {"bpe": 2, "word": 3, "char": 1}
# GPT-2's context: run_clm-style scripts cap block_size at model_max_length, so every tokenizer gives the same cap.
DEFAULT_MODEL_MAX_LENGTH = 1024
# The most characters handed to `tokenizers` at once (about 10 MB of its memory): longer documents go in pieces.
PIECE_CHARS = 100_000


def train_tokenizer(
    texts_or_dataset: Iterable[str] | datasets.Dataset,
    kind: str = "bpe",
    *,
    vocab_size: int | None = None,
    min_frequency: int | None = None,
    text_column: str = "text",
    model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
) -> PreTrainedTokenizerFast:
    """Train a ``kind`` tokenizer on texts (or a ``Dataset``'s ``text_column``); defaults per kind as above.

    The special tokens are ``<pad>``, ``<unk>``, ``<s>``, ``</s>``, ``<mask>`` (ids 0-4), all distinct, so a
    padding collator never masks EOS out of the labels. No special tokens are added on encoding, like GPT-2.
    """
    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"Unknown tokenizer kind {kind!r}; choose one of {TOKENIZER_KINDS}.")
    if isinstance(texts_or_dataset, datasets.DatasetDict):
        raise ValueError(
            "Pass one split (e.g. corpus['train']), not a DatasetDict: held-out text must not shape the vocabulary."
        )
    if isinstance(texts_or_dataset, str):
        raise ValueError("Pass a list of texts, not a single string.")
    if isinstance(texts_or_dataset, datasets.Dataset):
        if text_column not in texts_or_dataset.column_names:
            raise ValueError(
                f"Column {text_column!r} is not in the dataset; its columns are {texts_or_dataset.column_names}."
            )
        batches = _piece_batches(_dataset_texts(texts_or_dataset, text_column))
        has_text = len(texts_or_dataset) > 0
    else:
        texts = list(texts_or_dataset)
        batches = _piece_batches(texts)
        has_text = any(text.strip() for text in texts)
    if not has_text:
        raise ValueError("No text to train the tokenizer on; pass the non-empty train split.")

    vocab_size = vocab_size or DEFAULT_VOCAB_SIZES[kind]
    min_frequency = DEFAULT_MIN_FREQUENCIES[kind] if min_frequency is None else min_frequency
    special_tokens = list(SPECIAL_TOKENS.values())
    if kind == "bpe":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=special_tokens,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: no text is out of vocabulary
            show_progress=False,
        )
    else:
        tokenizer = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS["unk_token"]))
        if kind == "word":
            tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        else:
            tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
            tokenizer.decoder = decoders.Fuse()  # join characters without spaces
        trainer = trainers.WordLevelTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=special_tokens, show_progress=False
        )
    tokenizer.train_from_iterator(batches, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,  # keep decode(encode(text)) == text
        **SPECIAL_TOKENS,
    )


def _dataset_texts(dataset: datasets.Dataset, text_column: str) -> Iterator[str]:
    for batch in dataset.select_columns([text_column]).iter(batch_size=1000):
        yield from batch[text_column]


def _piece_batches(texts: Iterable[str]) -> Iterator[list[str]]:
    for call in _piece_calls(texts):
        yield [piece for _, piece in call]


def text_pieces(text: str, piece_chars: int | None = None) -> list[str]:
    """`text` in pieces of at most `piece_chars` (default `PIECE_CHARS`) characters, each cut just before a space
    that precedes a non-space character.

    No pre-tokenizer here joins text across such a cut (byte-level BPE's joins that space to the word after it and
    ends any run of spaces before it; word and char split there anyway), so tokenising the pieces one after the
    other gives the ids of the whole text, and training on them the same vocabulary. A stretch of `piece_chars`
    characters without such a space is cut where it reaches that length, the one place where the ids can differ.
    """
    piece_chars = piece_chars or PIECE_CHARS
    pieces, start = [], 0
    while len(text) - start > piece_chars:
        end = start + piece_chars
        cut = text.rfind(" ", start + 1, end + 1)
        while cut != -1 and text[cut + 1 : cut + 2].isspace():
            cut = text.rfind(" ", start + 1, cut)
        cut = end if cut == -1 else cut
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _piece_calls(texts: Iterable[str]) -> Iterator[list[tuple[int, str]]]:
    """The texts' pieces with the index of their text, in groups of at most `PIECE_CHARS` characters (or one piece):
    what one call to `tokenizers` is given."""
    call, size = [], 0
    for index, text in enumerate(texts):
        for piece in text_pieces(text):
            if call and size + len(piece) > PIECE_CHARS:
                yield call
                call, size = [], 0
            call.append((index, piece))
            size += len(piece)
    if call:
        yield call


def encode_in_pieces(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Each text's token ids without special tokens, as ``tokenizer(texts, add_special_tokens=False)`` gives them,
    tokenised `PIECE_CHARS` characters at a time (see :func:`text_pieces`)."""
    ids = [[] for _ in texts]
    for call in _piece_calls(texts):
        # verbose=False: documents longer than model_max_length are expected; packing cuts them.
        encoded = tokenizer([piece for _, piece in call], add_special_tokens=False, verbose=False)["input_ids"]
        for (index, _), piece_ids in zip(call, encoded, strict=True):
            ids[index].extend(piece_ids)
    return ids


# The files a saved tokenizer leaves in a model folder, any one of which `AutoTokenizer` can load from.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def has_tokenizer(folder: str | os.PathLike) -> bool:
    return any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


def folder_tokenizer(folder: str | os.PathLike, vocab_size: int) -> PreTrainedTokenizerBase | None:
    """The tokenizer saved beside a model, or None; refused when it has more tokens than the model's embedding has
    rows, since its ids from `vocab_size` on would index past it."""
    if not has_tokenizer(folder):
        return None
    tokenizer = load_tokenizer(folder)
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"The tokenizer in {folder} has {len(tokenizer)} tokens, but the model's embedding has {vocab_size} rows "
            f"(vocab_size in config.json): ids from {vocab_size} on would index past it. Save the model with the "
            "tokenizer it was trained with, or resize its embeddings (model.resize_token_embeddings)."
        )
    return tokenizer


def load_tokenizer(name_or_path: str | os.PathLike, **kwargs) -> PreTrainedTokenizerBase:
    """A saved tokenizer folder or a Hub id (e.g. ``bert-base-uncased``), through ``AutoTokenizer``; a failure names
    what was asked for."""
    try:
        return AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    except OSError as error:
        raise OSError(f"Cannot load a tokenizer from {str(name_or_path)!r}: {error}") from error
