import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

# Tests never reach the Hugging Face Hub; set before huggingface_hub reads it on import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from a second thread, and OpenMP's spin-waiting makes the RNN kernels up to 1000x slower
# when another process holds a core. Subprocesses (example scripts, torchrun) inherit the variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

import hf_evolution  # noqa: E402  (registers the Auto classes for every test)
from hf_evolution.families import CLASSIC_FAMILIES, RECURRENT_FAMILIES  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# Every recurrent family of ours runs the contract tests; the classic ones (torch's fused kernels) also bidirectional.
FAMILIES = RECURRENT_FAMILIES
# (family, bidirectional) for the encoder heads.
ENCODER_CASES = [(family, False) for family in FAMILIES] + [(family, True) for family in CLASSIC_FAMILIES]
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
    return hf_evolution.FAMILIES[model_type].config_class(**fields)


def class_prefix(model_type: str) -> str:
    """What a family's class names start with: `LSTM` in `LSTMForCausalLM`, `MinGRU` in `MinGRUModel`."""
    return hf_evolution.FAMILIES[model_type].config_class.__name__.removesuffix("Config")


def code_files(model_type: str) -> tuple[str, str]:
    """The configuration and modeling files of a family, as a saved folder carries them."""
    return tuple(f"{stem}.py" for stem in hf_evolution.FAMILIES[model_type].code_files)


def make_model(model_type: str, head: str = "causal", seed: int = 0, **overrides):
    """A freshly initialised model in eval mode; head is one of base, causal, sequence, token."""
    torch.manual_seed(seed)
    task = {"base": "base", "causal": "lm", "sequence": "classify", "token": "tokens"}[head]
    return hf_evolution.FAMILIES[model_type].heads[task](tiny_config(model_type, **overrides)).eval()


REFUSE_HF_EVOLUTION = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class RefuseHfEvolution(importlib.abc.MetaPathFinder):
        # An editable install is found through an import hook, not sys.path: refuse the name itself.
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "hf_evolution":
                raise ModuleNotFoundError(f"hf_evolution is not installed here ({name})")

    sys.meta_path.insert(0, RefuseHfEvolution())
    try:
        import hf_evolution  # noqa: F401
        raise SystemExit("the import refusal did not work")
    except ModuleNotFoundError:
        pass
    """
)


def run_without_hf_evolution(body: str, arguments: list, cwd) -> dict:
    """Run `body` in a fresh Python where hf_evolution cannot be imported; it prints one JSON line, returned here.

    `arguments` arrive JSON-encoded as `ARGS`."""
    script = REFUSE_HF_EVOLUTION + f"ARGS = json.loads({json.dumps(json.dumps(arguments))})\n" + textwrap.dedent(body)
    result = subprocess.run(
        [sys.executable, "-c", script],
        stdin=subprocess.DEVNULL,  # a trust_remote_code prompt must fail, not wait
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""},
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert not report.pop("hf_evolution_loaded"), "hf_evolution was imported after all"
    return report


FAULTS = Path(__file__).resolve().parent / "fault_injection.py"


def killed_at(moment: str, n: int, *command: str) -> None:
    """Run a command (a script or `compare ...`), killed with SIGKILL at the n-th call of `moment` (see
    fault_injection.py): no timing involved."""
    result = subprocess.run(
        [sys.executable, str(FAULTS), moment, str(n), "--", *command],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == -signal.SIGKILL, (moment, n, result.returncode, result.stderr[-2000:])


def load_example(name: str):
    """An example script as a module, so that a test calls its `main(args)` in-process."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
