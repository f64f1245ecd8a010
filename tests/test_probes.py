"""`hf-evolution probe`: each probe through the command line on tiny models, and what its results must satisfy."""

import json
import math
import random

import pytest
import torch
from conftest import SENTENCES, make_model

from hf_evolution.cli import main
from hf_evolution.families import build_model
from hf_evolution.probes import speed
from hf_evolution.probes.speed import time_generation
from hf_evolution.probes.tasks import SYNTHETIC_TASKS, adding_batch, copy_batch, mqar_batch

RECURRENT = ("rnn", "lstm", "gru", "mingru", "minlstm")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run as fast on one thread, and a second thread waiting on a busy shared core can be 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    """A small corpus as a .txt file (one document per line): enough tokens for tiny blocks in every split."""
    lines = [f"{a} and {b}" for a in SENTENCES for b in SENTENCES] * 8
    random.Random(0).shuffle(lines)
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, tiny_tokenizer):
    path = tmp_path_factory.mktemp("tokenizer")
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def lm_folders(tmp_path_factory, tiny_tokenizer):
    """Saved causal LMs with their tokenizer (an LSTM of ours and a GPT-2), as `hf-evolution compare` leaves them."""
    root = tmp_path_factory.mktemp("models")
    folders = {"lstm": make_model("lstm"), "gpt2": build_model("gpt2", "lm", "tiny", tiny_tokenizer)}
    for name, model in folders.items():
        model.save_pretrained(root / name)
        tiny_tokenizer.save_pretrained(root / name)
    return {name: root / name for name in folders}


def read_results(folder):
    return json.loads((folder / "results.json").read_text())


def test_copy_at_distance_1_is_learned_by_every_family_in_the_smoke_budget(tmp_path):
    out = tmp_path / "run"
    args = ["probe", "memory", "--preset", "smoke", "--tasks", "copy", "--distances", "1", "--output", str(out)]
    assert main(args) == 0
    results = read_results(out)
    assert results["tasks"]["copy"]["chance"] == 1 / 8
    assert list(results["models"]) == ["rnn", "lstm", "gru", "gpt2", "mingru", "minlstm", "mamba"]
    for name, entry in results["models"].items():
        copy = entry["tasks"]["copy"]
        # minGRU and minLSTM, whose gates cannot see the state, copy only some of the 4 symbols in this budget.
        assert copy["accuracy"]["1"] >= (0.2 if name.startswith("min") else 0.9), (name, copy["accuracy"])
        assert copy["parameters"]["non_embedding"] > 0
    assert (out / "memory.png").stat().st_size > 0
    assert results["settings"]["steps"] == 300 and results["environment"]["versions"]["torch"]


def test_memory_runs_every_task_and_records_each_distance(tmp_path, lm_folders):
    out = tmp_path / "run"
    args = ["probe", "memory", "--models", "gru,bert", "--distances", "2,3", "--steps", "2", "--eval-size", "8"]
    assert main([*args, "--model", str(lm_folders["gpt2"]), "--output", str(out)]) == 0
    results = read_results(out)
    assert set(results["tasks"]) == set(SYNTHETIC_TASKS) and list(results["models"]) == ["gru", "bert", "gpt2"]
    assert results["models"]["gpt2"]["tasks"]["mqar"]["config"]["vocab_size"] == 33, "the folder's architecture"
    for entry in results["models"].values():
        for task in entry["tasks"].values():
            assert set(task["accuracy"]) == {"2", "3"}
            assert all(0 <= accuracy <= 1 for accuracy in task["accuracy"].values())
    assert "mqar" in (out / "results.json").read_text()


def test_synthetic_batches_ask_what_the_inputs_hold():
    generator = torch.Generator().manual_seed(0)
    inputs, targets = copy_batch(5, 7, generator)
    go = (inputs == 9).nonzero()[:, 1]
    assert inputs.shape == (5, 4 - 1 + 7 + 4) and torch.all(go == 3 + 7)
    assert torch.equal(targets[:, go[0] :], inputs[:, :4]) and torch.all(targets[:, : go[0]] == -100)

    inputs, targets = adding_batch(64, 10, generator)
    marked = inputs[:, :-1] >= 10
    assert torch.all(marked.sum(dim=1) == 2) and torch.all(marked[:, :5].sum(dim=1) == 1)
    assert torch.equal(targets[:, -1], (inputs[:, :-1] - 10).where(marked, 0).sum(dim=1))
    assert torch.all(targets[:, :-1] == -100)

    inputs, targets = mqar_batch(6, 5, generator)
    pairs = {
        (row, int(key)): int(value)
        for row in range(6)
        for key, value in zip(inputs[row, 0:8:2], inputs[row, 1:8:2], strict=True)
    }
    queries = (targets != -100).nonzero().tolist()
    assert len(queries) == 6 * 4 and min(column for _, column in queries) == 2 * 4 - 1 + 5
    assert all(pairs[(row, int(inputs[row, column]))] == targets[row, column] for row, column in queries)
    assert torch.equal(
        copy_batch(3, 4, torch.Generator().manual_seed(1))[0], copy_batch(3, 4, torch.Generator().manual_seed(1))[0]
    )


def test_gradients_are_finite_positive_curves_for_every_distance(tmp_path, text_file, tokenizer_dir):
    out = tmp_path / "run"
    args = ["probe", "gradients", "--preset", "smoke", "--length", "12", "--samples", "2", "--steps", "3"]
    args += ["--dataset", str(text_file), "--tokenizer", str(tokenizer_dir), "--output", str(out)]
    assert main(args) == 0
    results = read_results(out)
    for name, entry in results["models"].items():
        for phase in ("before_training", "after_training"):
            curves = entry[phase]
            layers = entry["config"].get("num_hidden_layers", entry["config"].get("n_layer"))  # 2, or 4 for Mamba
            assert list(curves) == [f"h{layer}" for layer in range(layers)], name  # the input of every layer
            assert all(len(curve) == 12 for curve in curves.values())
            assert all(math.isfinite(value) and value > 0 for value in curves["h0"]), (name, phase)
        log = entry["training_log"]
        assert [row["step"] for row in log] == [1, 2, 3]
        assert {"embeddings", "layer 1", "layer 2"} <= set(log[0]["grad_norm"])
    assert {"gradients.png", "gradients-layers.png"} <= {path.name for path in out.iterdir()}


def test_gradients_refuse_bert_and_say_why(tmp_path, capsys):
    assert main(["probe", "gradients", "--models", "lstm,bert", "--output", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "bert" in error and "bidirectional" in error and "attends to the tokens after it" in error
    assert not (tmp_path / "run").exists(), "refused before any work"


def test_unknown_family_gets_the_valid_ones(tmp_path, capsys):
    assert main(["probe", "speed", "--models", "lstm,transformer", "--output", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "Unknown model(s) transformer; choose from rnn, lstm, gru, gpt2, bert, mingru, minlstm, mamba or a" in error


def test_recurrent_state_is_constant_while_the_kv_cache_grows(tmp_path):
    out = tmp_path / "run"
    assert main(["probe", "speed", "--preset", "smoke", "--contexts", "16,32,64", "--output", str(out)]) == 0
    results = read_results(out)
    for name, entry in results["models"].items():
        sizes = [entry["generation"][context]["cache_bytes"] for context in ("16", "32", "64")]
        if name in RECURRENT:
            states = 2 if name == "lstm" else 1
            config = entry["config"]
            assert sizes == [config["num_hidden_layers"] * states * config["hidden_size"] * 4] * 3
        elif name == "mamba":  # a convolution window and a state per channel, whatever the context
            config = entry["config"]
            per_layer = config["intermediate_size"] * (config["conv_kernel"] + config["state_size"]) * 4
            assert sizes == [config["num_hidden_layers"] * per_layer] * 3
        else:
            assert sizes[1] == 2 * sizes[0] and sizes[2] == 4 * sizes[0], "keys and values: linear in the context"
        for timing in entry["lengths"].values():
            assert timing["train_step_ms"] > 0 and timing["forward_ms"] > 0
        assert all(timing["ms_per_token"] > 0 for timing in entry["generation"].values())
    assert {"speed-time.png", "speed-generation.png"} <= {path.name for path in out.iterdir()}


def test_speed_times_bert_but_does_not_generate_with_it(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["probe", "speed", "--preset", "smoke", "--models", "bert", "--lengths", "16", "--output", str(out)]
    assert main(args) == 0
    entry = read_results(out)["models"]["bert"]
    assert entry["lengths"]["16"]["forward_ms"] > 0 and "generation" not in entry
    assert "bidirectional" in entry["generation_skipped"] and "bert: no generation" in capsys.readouterr().err


def test_context_loss_by_position_for_saved_models(tmp_path, text_file, lm_folders):
    out = tmp_path / "run"
    args = ["probe", "context", "--preset", "smoke", "--block-size", "16", "--dataset", str(text_file)]
    args += ["--model", str(lm_folders["lstm"]), "--model", str(lm_folders["gpt2"]), "--output", str(out)]
    assert main(args) == 0
    results = read_results(out)
    assert set(results["models"]) == {"lstm", "gpt2"}
    for entry in results["models"].values():
        assert len(entry["loss_by_context"]) == 15 and all(loss > 0 for loss in entry["loss_by_context"])
        assert [(b["context_from"], b["context_to"]) for b in entry["buckets"]] == [(1, 1), (2, 3), (4, 7), (8, 15)]
        assert entry["summary"]["loss_at_context_1"] == entry["buckets"][0]["loss"]
    assert (out / "context.png").exists()


def test_context_needs_models_a_tokenizer_and_a_language_model_head(tmp_path, capsys, tiny_tokenizer):
    assert main(["probe", "context", "--output", str(tmp_path / "a")]) == 2
    assert "give --model FOLDER" in capsys.readouterr().err

    bare = tmp_path / "no-tokenizer"
    make_model("gru").save_pretrained(bare)
    assert main(["probe", "context", "--model", str(bare), "--output", str(tmp_path / "b")]) == 2
    assert "has no tokenizer" in capsys.readouterr().err

    classifier = tmp_path / "classifier"
    make_model("gru", head="sequence").save_pretrained(classifier)
    tiny_tokenizer.save_pretrained(classifier)
    assert main(["probe", "context", "--model", str(classifier), "--output", str(tmp_path / "c")]) == 2
    assert "GRUForSequenceClassification, which has no language-model head" in capsys.readouterr().err


def test_an_interrupted_run_keeps_the_models_that_finished(tmp_path, monkeypatch):
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return time_generation(*args, **kwargs)

    monkeypatch.setattr(speed, "time_generation", interrupted)
    out = tmp_path / "run"
    assert main(["probe", "speed", "--preset", "smoke", "--models", "rnn,gpt2", "--output", str(out)]) == 130
    assert list(read_results(out)["models"]) == ["rnn"]
    assert (out / "speed-generation.png").exists()


def test_an_existing_run_is_kept_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["probe", "speed", "--preset", "smoke", "--models", "rnn", "--lengths", "8", "--contexts", "8"]
    assert main([*args, "--output", str(out)]) == 0
    before = (out / "results.json").read_text()
    assert main([*args, "--output", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "results.json").read_text() == before
    assert main([*args, "--output", str(out), "--overwrite"]) == 0


@pytest.mark.parametrize("probe", ["gradients", "memory", "speed", "context"])
def test_every_probe_explains_itself(probe, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", probe, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--output" in text and "--overwrite" in text and "--seed" in text and "--device" in text
    assert "--preset smoke" in text


def test_speed_skips_the_longer_lengths_once_a_step_takes_too_long(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["probe", "speed", "--preset", "smoke", "--models", "mamba", "--lengths", "8,16,32", "--contexts", "8"]
    assert main([*args, "--max-step-seconds", "1e-6", "--output", str(out)]) == 0
    entry = read_results(out)["models"]["mamba"]
    assert entry["lengths"]["8"]["train_step_ms"] > 0 and entry["lengths"]["16"] is None is entry["lengths"]["32"]
    assert entry["lengths_skipped"].startswith("lengths over 8 skipped: a training step at 8 tokens took")
    assert "mamba: lengths over 8 skipped" in capsys.readouterr().err


def test_memory_skips_a_distance_whose_budget_would_take_too_long_and_the_longer_ones(tmp_path):
    out = tmp_path / "run"
    args = ["probe", "memory", "--preset", "smoke", "--models", "gru", "--tasks", "copy", "--distances", "2,8"]
    assert main([*args, "--max-minutes", "1e-9", "--output", str(out)]) == 0
    copy = read_results(out)["models"]["gru"]["tasks"]["copy"]
    assert copy["accuracy"] == {} and copy["skipped"]["2"].startswith("300 steps would take about")
    assert copy["skipped"]["8"] == "skipped, as the shorter distance was"


def test_context_summary_measures_the_gain_after_32_tokens():
    from hf_evolution.probes.context import context_buckets, context_summary

    # The loss falls by 1 nat over the first 7 tokens of context and by 0.1 more from 32 tokens on.
    losses = [5.0, 4.5, 4.5, 4.0, 4.0, 4.0, 4.0] + [4.0] * 24 + [3.9] * 33
    summary = context_summary(context_buckets(losses))
    assert summary["gain"] == pytest.approx(1.1)
    assert summary["gain_after_32_tokens"] == pytest.approx(0.1)
    assert summary["context_for_90_percent_of_gain"] == 4  # 1.0 of the 1.1 nats
    assert context_summary(context_buckets(losses[:31]))["gain_after_32_tokens"] is None  # no context that long
