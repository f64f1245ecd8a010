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
        batches = _text_batches(texts_or_dataset, text_column)
        has_text = len(texts_or_dataset) > 0
    else:
        texts = list(texts_or_dataset)
        batches = iter([texts])
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


def _text_batches(dataset: datasets.Dataset, text_column: str) -> Iterator[list[str]]:
    for batch in dataset.select_columns([text_column]).iter(batch_size=1000):
        yield batch[text_column]


# The files a saved tokenizer leaves in a model folder, any one of which `AutoTokenizer` can load from.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def has_tokenizer(folder: str | os.PathLike) -> bool:
    return any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer(name_or_path: str | os.PathLike, **kwargs) -> PreTrainedTokenizerBase:
    """A saved tokenizer folder or a Hub id (e.g. ``bert-base-uncased``), through ``AutoTokenizer``; a failure names
    what was asked for."""
    try:
        return AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    except OSError as error:
        raise OSError(f"Cannot load a tokenizer from {str(name_or_path)!r}: {error}") from error
