"""The preprocessing every model in a comparison shares: token streams, blocks, carried-state streams, classification
inputs, token labels and corpus statistics.

Each public function takes a Dataset or a DatasetDict (then every split is processed). They are
``Dataset.map(batched=True)`` calls on module-level functions whose arguments (tokenizer included) hash stably, so
``datasets`` caches their results by fingerprint: an identical second call loads the cache files instead of
tokenising again.
"""

from __future__ import annotations

import itertools

import datasets
import numpy as np
import pyarrow.compute as pc

from .. import tokenization


def _per_split(data, process):
    if isinstance(data, datasets.DatasetDict):
        return datasets.DatasetDict({split: process(ds, split) for split, ds in data.items()})
    return process(data, str(data.split or "dataset"))


def _require_columns(dataset: datasets.Dataset, split: str, *columns: str | None) -> None:
    for column in columns:
        if column is not None and column not in dataset.column_names:
            raise ValueError(f"Column {column!r} is not in {split}; its columns are {dataset.column_names}.")


def _require_pad_token(tokenizer) -> None:
    if tokenizer.pad_token is None:
        raise ValueError(
            f"Tokenizer {tokenizer.name_or_path!r} has no pad token, and the collator pads each batch. Add one, "
            "e.g. tokenizer.add_special_tokens({'pad_token': '<pad>'}) (then resize the model's embeddings); "
            "do not reuse eos_token, or EOS is masked out of the labels."
        )


def _end_of_document_id(tokenizer) -> int:
    """EOS, or SEP for BERT-style tokenizers that have no EOS."""
    token_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if token_id is None:
        raise ValueError(
            f"Tokenizer {tokenizer.name_or_path!r} has no eos_token (nor sep_token) to mark where documents end. "
            "Add one, e.g. tokenizer.add_special_tokens({'eos_token': '</s>'}), and resize the model's embeddings."
        )
    return token_id


def _tokenize_with_eos(batch, tokenizer, text_column, eos_token_id):
    ids = tokenization.encode_in_pieces(tokenizer, batch[text_column])  # a long document in bounded pieces
    return {"input_ids": [doc + [eos_token_id] for doc in ids]}


def tokenize_documents(data, tokenizer, *, text_column: str = "text", num_proc: int | None = None):
    """One row per document: its token ids followed by EOS, as ``input_ids``. The cached first step of packing."""
    eos_token_id = _end_of_document_id(tokenizer)

    def process(dataset, split):
        _require_columns(dataset, split, text_column)
        return dataset.map(
            _tokenize_with_eos,
            batched=True,
            remove_columns=dataset.column_names,
            fn_kwargs={"tokenizer": tokenizer, "text_column": text_column, "eos_token_id": eos_token_id},
            num_proc=num_proc,
            desc=f"Tokenizing {split}",
        )

    return _per_split(data, process)


def token_stream(dataset: datasets.Dataset, tokenizer, *, text_column: str = "text") -> np.ndarray:
    """A split as one stream of token ids: documents in order, EOS after each (the stream the packers cut)."""
    documents = tokenize_documents(dataset, tokenizer, text_column=text_column)
    return pc.list_flatten(documents.data.column("input_ids")).to_numpy()


def _count_tokens(documents: datasets.Dataset) -> int:
    return pc.sum(pc.list_value_length(documents.data.column("input_ids"))).as_py() or 0


def _cut_blocks(table, block_size):
    stream = pc.list_flatten(table["input_ids"]).to_numpy()
    num_blocks = len(stream) // block_size
    return _lm_columns(stream[: num_blocks * block_size].reshape(num_blocks, block_size))


def stream_rows(stream: np.ndarray, rows: int) -> np.ndarray:
    """The classic `batchify`: the stream cut into `rows` contiguous rows of len(stream) // rows tokens each."""
    length = len(stream) // rows
    return stream[: rows * length].reshape(rows, length)


def _cut_stream_blocks(table, block_size, batch_size):
    rows = stream_rows(pc.list_flatten(table["input_ids"]).to_numpy(), batch_size)
    steps = (rows.shape[1] - 1) // block_size  # each block's targets are its tokens one step ahead
    inputs = rows[:, : steps * block_size].reshape(batch_size, steps, block_size)
    targets = rows[:, 1 : steps * block_size + 1].reshape(batch_size, steps, block_size)
    # Block i * batch_size + j is step i of row j, so batch i + 1 continues batch i row by row.
    inputs, targets = (blocks.transpose(1, 0, 2).reshape(-1, block_size) for blocks in (inputs, targets))
    return {**_lm_columns(inputs), "shift_labels": targets}


def _lm_columns(blocks: np.ndarray) -> dict:
    # labels are input_ids: the models shift them internally, like GPT-2.
    return {"input_ids": blocks, "attention_mask": np.ones_like(blocks, dtype=np.int8), "labels": blocks.copy()}


def _pack(data, tokenizer, block_size, batch_size, text_column, num_proc):
    """Blocks of the token stream: consecutive ones, or interleaved into batch_size rows when it is given."""
    if block_size < 1:
        raise ValueError(f"block_size must be a positive number of tokens, not {block_size}.")
    if batch_size is None:
        cut, cut_kwargs, tokens_needed = _cut_blocks, {"block_size": block_size}, block_size
        needed, lower = f"{block_size} of one block", f"block_size ({block_size})"
    elif batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of rows, not {batch_size}.")
    else:
        cut, cut_kwargs = _cut_stream_blocks, {"block_size": block_size, "batch_size": batch_size}
        tokens_needed = (block_size + 1) * batch_size
        needed = f"{tokens_needed} of one batch (batch_size x (block_size + 1))"
        lower = f"block_size ({block_size}) or batch_size ({batch_size})"
    documents = tokenize_documents(data, tokenizer, text_column=text_column, num_proc=num_proc)

    def process(dataset, split):
        num_tokens = _count_tokens(dataset)
        if num_tokens < tokens_needed:
            raise ValueError(
                f"The {split} split has {num_tokens} tokens (EOS included), fewer than the {needed}; "
                f"lower {lower}, or use more data."
            )
        # batch_size=None: the whole split is one batch, so only the very end of the split is dropped.
        return (
            dataset.with_format("arrow")
            .map(cut, batched=True, batch_size=None, remove_columns=["input_ids"], fn_kwargs=cut_kwargs)
            .with_format(None)
        )

    return _per_split(documents, process)


def pack_for_lm(
    data, tokenizer, block_size: int, *, text_column: str = "text", num_proc: int | None = None
) -> datasets.Dataset | datasets.DatasetDict:
    """Tokenise, append EOS after each document, concatenate, and cut the stream into blocks of ``block_size``.

    Rows have ``input_ids``, ``attention_mask`` and ``labels`` (= ``input_ids``; the models shift). Only the
    last partial block of each split is dropped. Blocks are in document order; shuffle them for training.
    """
    return _pack(data, tokenizer, block_size, None, text_column, num_proc)


def batchify_for_lm(
    data, tokenizer, block_size: int, batch_size: int, *, text_column: str = "text", num_proc: int | None = None
) -> datasets.Dataset | datasets.DatasetDict:
    """Blocks laid out for carried-state (truncated BPTT) training, as ``batchify`` and ``get_batch`` in PyTorch's
    word language model example.

    The token stream (documents in order, EOS after each) is cut into ``batch_size`` contiguous rows of
    ``len(stream) // batch_size`` tokens, and each row into blocks of ``block_size``. Rows are interleaved so that,
    read in order ``batch_size`` rows at a time, row j of batch i + 1 continues exactly where row j of batch i
    ended. ``shift_labels`` are each block's tokens one step ahead (transformers' losses take them as they are), so
    every token is scored, the first of a block too, from the state the previous block left. Read it with a
    sequential sampler, exactly ``batch_size`` rows per batch; the last partial block of each row is dropped.
    """
    return _pack(data, tokenizer, block_size, batch_size, text_column, num_proc)


def _tokenize_truncated(batch, tokenizer, text_column, max_length):
    # Only the start of a document is kept: tokenise its first piece(s), far more than max_length tokens, not all of
    # a long one (see tokenization.text_pieces; 64 characters a token is more than any tokenizer's tokens average).
    head = max(tokenization.PIECE_CHARS, 64 * max_length)
    texts = [tokenization.text_pieces(text, head)[0] for text in batch[text_column]]
    return tokenizer(texts, truncation=True, max_length=max_length)


def tokenize_for_classification(
    data,
    tokenizer,
    *,
    max_length: int,
    text_column: str = "text",
    label_column: str | None = "label",
    num_proc: int | None = None,
):
    """Tokenise for sequence classification, truncating to ``max_length`` tokens; keeps only the label column.

    No padding here: ``DataCollatorWithPadding`` (Trainer's default with ``processing_class=tokenizer``) pads
    each batch to its longest row, so the tokenizer needs a pad token.
    """
    _require_pad_token(tokenizer)
    if max_length < 1:
        raise ValueError(f"max_length must be a positive number of tokens, not {max_length}.")

    def process(dataset, split):
        _require_columns(dataset, split, text_column, label_column)
        return dataset.map(
            _tokenize_truncated,
            batched=True,
            remove_columns=[column for column in dataset.column_names if column != label_column],
            fn_kwargs={"tokenizer": tokenizer, "text_column": text_column, "max_length": max_length},
            num_proc=num_proc,
            desc=f"Tokenizing {split}",
        )

    return _per_split(data, process)


def _align_labels(batch, tokenizer, words_column, tags_column, label_all_subwords, continuation, max_length):
    encoding = tokenizer(
        batch[words_column], is_split_into_words=True, truncation=max_length is not None, max_length=max_length
    )
    all_labels = []
    for i, tags in enumerate(batch[tags_column]):
        labels, previous = [], None
        for word_id in encoding.word_ids(i):
            if word_id is None:  # special tokens
                labels.append(-100)
            elif word_id != previous:  # first subword of a word
                labels.append(tags[word_id])
            elif label_all_subwords:
                labels.append(continuation[tags[word_id]] if continuation else tags[word_id])
            else:
                labels.append(-100)
            previous = word_id
        all_labels.append(labels)
    encoding["labels"] = all_labels
    return encoding


def _continuation_tags(tags_feature) -> list[int] | None:
    """For B-/I- tag names: the I- id that a non-first subword of a B- word gets (run_ner.py's b_to_i_label)."""
    names = getattr(getattr(tags_feature, "feature", None), "names", None)
    if names is None:
        return None
    continuation = list(range(len(names)))
    for i, name in enumerate(names):
        if name.startswith("B-") and "I-" + name[2:] in names:
            continuation[i] = names.index("I-" + name[2:])
    return continuation


def align_token_labels(
    data,
    tokenizer,
    *,
    words_column: str = "tokens",
    tags_column: str = "tags",
    label_all_subwords: bool = False,
    max_length: int | None = None,
    num_proc: int | None = None,
):
    """Tokenise pre-split words and align their tags to tokens, as transformers' ``run_ner.py`` does.

    ``labels`` gets the word's tag on its first subword and -100 (ignored by the loss) on special tokens and,
    unless ``label_all_subwords``, on the other subwords (which then get the tag, B- turned into I-).
    Truncates to ``max_length`` when given; ``DataCollatorForTokenClassification`` pads later.
    """
    _require_pad_token(tokenizer)

    def process(dataset, split):
        _require_columns(dataset, split, words_column, tags_column)
        return dataset.map(
            _align_labels,
            batched=True,
            remove_columns=dataset.column_names,
            fn_kwargs={
                "tokenizer": tokenizer,
                "words_column": words_column,
                "tags_column": tags_column,
                "label_all_subwords": label_all_subwords,
                "continuation": _continuation_tags(dataset.features[tags_column]),
                "max_length": max_length,
            },
            num_proc=num_proc,
            desc=f"Aligning labels of {split}",
        )

    return _per_split(data, process)


def _count_words(text: str) -> int:
    """``len(text.split())`` without a list of every word of a long document at once."""
    pieces = tokenization.text_pieces(text)
    # A piece cut inside a word (a stretch without spaces, see text_pieces) must not count that word twice.
    split_words = sum(not a[-1].isspace() and not b[0].isspace() for a, b in itertools.pairwise(pieces))
    return sum(len(piece.split()) for piece in pieces) - split_words


def corpus_stats(data, tokenizer=None, *, text_column: str = "text", num_proc: int | None = None) -> dict:
    """Documents, whitespace-separated words and UTF-8 bytes of the text, and tokens if a tokenizer is given.

    ``tokens`` counts one EOS per document, i.e. the length of the stream :func:`pack_for_lm` cuts (it reuses
    the same cached tokenisation). ``bytes`` is the tokenizer-independent denominator of bits per byte (see
    :func:`hf_evolution.metrics.lm_metrics`). For a ``DatasetDict`` the result maps each split to its figures.
    """

    def process(dataset, split):
        _require_columns(dataset, split, text_column)
        stats = {"documents": len(dataset), "words": 0, "bytes": 0}
        for batch in dataset.select_columns([text_column]).iter(batch_size=1000):
            stats["words"] += sum(_count_words(text) for text in batch[text_column])
            stats["bytes"] += sum(len(text.encode("utf-8")) for text in batch[text_column])
        if tokenizer is not None:
            documents = tokenize_documents(dataset, tokenizer, text_column=text_column, num_proc=num_proc)
            stats["tokens"] = _count_tokens(documents)
        return stats

    if isinstance(data, datasets.DatasetDict):
        return {split: process(dataset, split) for split, dataset in data.items()}
    return process(data, str(data.split or "dataset"))


def unigram_loss(blocks: datasets.Dataset, vocab_size: int) -> float:
    """The entropy of the token frequencies of packed blocks, in nats per token: the loss of the best model that reads
    no context. A language model reaches it in its first steps; one that stays near it has learned nothing more (the
    unigram plateau)."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for batch in blocks.select_columns(["input_ids"]).with_format("numpy").iter(batch_size=4096):
        counts += np.bincount(np.asarray(batch["input_ids"]).ravel(), minlength=vocab_size)[:vocab_size]
    frequencies = counts[counts > 0] / counts.sum()
    return float(-(frequencies * np.log(frequencies)).sum())
