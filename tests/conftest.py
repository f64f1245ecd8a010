import os

import pytest

# Tests never reach the Hugging Face Hub; set before huggingface_hub reads it on import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def datasets_cache(tmp_path_factory):
    """A fresh datasets cache: cache-hit tests then see a first computation, and no test reads stale files."""
    return str(tmp_path_factory.mktemp("datasets_cache"))


@pytest.fixture(scope="session")
def bbc_news(datasets_cache):
    from hf_evolution.data import BBC_NEWS, load_corpus

    return load_corpus(BBC_NEWS, cache_dir=datasets_cache)
