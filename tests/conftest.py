import os

import pytest
import torch

# Tests never reach the Hugging Face Hub; set before huggingface_hub reads it on import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hf_evolution  # noqa: E402  (registers the Auto classes for every test)

FAMILIES = ("rnn", "lstm", "gru")
SENTENCES = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "stocks fell on monday as markets worried about rates",
    "the team won the cup final after extra time",
    "new phones arrive with faster chips and better cameras",
]


@pytest.fixture(scope="session")
def datasets_cache(tmp_path_factory):
    """A fresh datasets cache: cache-hit tests then see a first computation, and no test reads stale files."""
    return str(tmp_path_factory.mktemp("datasets_cache"))


@pytest.fixture(scope="session")
def bbc_news(datasets_cache):
    from hf_evolution.data import BBC_NEWS, load_corpus

    return load_corpus(BBC_NEWS, cache_dir=datasets_cache)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE tokenizer with distinct pad/unk/bos/eos/mask tokens, trained on a few sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "<unk>", "<s>", "</s>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(SENTENCES * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        mask_token="<mask>",
    )


def tiny_config(model_type: str, **overrides):
    """A small config of the family; dropouts off so that train-mode outputs are deterministic unless asked."""
    fields = dict(
        vocab_size=320,
        hidden_size=16,
        embedding_size=12,
        num_hidden_layers=2,
        input_dropout=0.0,
        hidden_dropout=0.0,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    fields.update(overrides)
    return hf_evolution.FAMILIES[model_type][0](**fields)


def make_model(model_type: str, head: str = "causal", seed: int = 0, **overrides):
    """A freshly initialised model in eval mode; head is one of base, causal, sequence, token."""
    torch.manual_seed(seed)
    index = {"base": 1, "causal": 2, "sequence": 3, "token": 4}[head]
    return hf_evolution.FAMILIES[model_type][index](tiny_config(model_type, **overrides)).eval()
