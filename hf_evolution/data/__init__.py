"""Data: corpora (`corpora.py`) and the preprocessing every model shares (`preprocessing.py`)."""

from .corpora import BBC_NEWS, SPLITS, TXT_MODES, load_corpus
from .preprocessing import (
    align_token_labels,
    batchify_for_lm,
    corpus_stats,
    pack_for_lm,
    stream_rows,
    token_stream,
    tokenize_documents,
    tokenize_for_classification,
    unigram_loss,
)

__all__ = [
    "BBC_NEWS",
    "SPLITS",
    "TXT_MODES",
    "align_token_labels",
    "batchify_for_lm",
    "corpus_stats",
    "load_corpus",
    "pack_for_lm",
    "stream_rows",
    "token_stream",
    "tokenize_documents",
    "tokenize_for_classification",
    "unigram_loss",
]
