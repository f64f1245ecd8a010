"""`hf-evolution compare` end to end on the smoke preset: files, finite figures, matched sizes, kill and resume."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hf_evolution.cli import main
from hf_evolution.compare.settings import BEST_LM_RECIPES, LEARNING_RATES, SGD_LEARNING_RATES, training_recipe
from hf_evolution.runs import open_run_folder

FIGURES = {
    "lm": [
        "val_loss",
        "test_loss",
        "val_perplexity",
        "test_perplexity",
        "val_bits_per_byte",
        "test_bits_per_byte",
        "generation_tokens_per_second",
    ],
    "classify": ["val_loss", "test_loss", "val_accuracy", "test_accuracy", "val_f1_macro", "test_f1_macro"],
}
COMMON = [
    "params_total",
    "params_non_embedding",
    "train_tokens",
    "train_seconds",
    "train_tokens_per_second",
    "peak_memory_mb",
    "wall_seconds",
]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("compare") / "run"
    assert main(["compare", "--preset", "smoke", "--output", str(output)]) == 0
    return output


def test_smoke_run_writes_every_file_with_finite_figures(smoke_run):
    for name in ("results.json", "results.csv", "results.md", "tokenizer/tokenizer.json"):
        assert (smoke_run / name).is_file(), name
    for task in ("lm", "classify"):
        for plot in ("validation_loss", "quality_vs_parameters", "throughput"):
            assert (smoke_run / f"{task}_{plot}.png").stat().st_size > 10_000
    results = json.loads((smoke_run / "results.json").read_text())
    assert results["environment"]["versions"]["torch"] and results["settings"]["seed"] == 42
    assert "tokens/s" in results["units"]["train_tokens_per_second"]
    models = {task: [row["model"] for row in results["runs"] if row["task"] == task] for task in ("lm", "classify")}
    assert models == {"lm": ["rnn", "lstm", "gru", "gpt2"], "classify": ["rnn", "lstm", "gru", "gpt2", "bert"]}
    for row in results["runs"]:
        for key in COMMON + FIGURES[row["task"]]:
            assert isinstance(row[key], (int, float)) and math.isfinite(row[key]) and row[key] >= 0, (
                row["model"],
                key,
            )
        assert row["curve"][0]["tokens"] == 0 and row["curve"][-1]["tokens"] == row["train_tokens"]
        assert row["train_tokens"] >= 0.9 * results["settings"]["preset"]["lm_tokens"]
        checkpoint = smoke_run / row["checkpoint"]
        assert (checkpoint / "model.safetensors").exists() and "## Results" in (checkpoint / "README.md").read_text()
        assert not list(checkpoint.glob("checkpoint-*"))


def test_every_language_model_is_also_scored_over_whole_splits_its_own_way(smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    for row in (row for row in results["runs"] if row["task"] == "lm"):
        recurrent = row["model"] != "gpt2"
        assert row["stream_protocol"].startswith("state carried" if recurrent else "sliding window of 64")
        for key in ("val_stream_perplexity", "test_stream_perplexity", "test_stream_bits_per_byte"):
            assert math.isfinite(row[key]) and row[key] > 0, (row["model"], key)
    text = (smoke_run / "results.md").read_text()
    assert "test ppl (blocks) | test ppl (stream)" in text and "gpt2: sliding window of 64, stride 32" in text


def test_each_family_trains_its_own_best_way_by_default(smoke_run):
    runs = json.loads((smoke_run / "results.json").read_text())["runs"]
    rows = {row["model"]: row for row in runs if row["task"] == "lm"}
    for family, best in BEST_LM_RECIPES.items():
        recipe = (rows[family]["training"], rows[family]["optimizer"], rows[family]["learning_rate"])
        assert recipe == ("stateful" if best["stateful"] else "blocks", best["optimizer"], best["learning_rate"])
    assert rows["gru"]["training"] == "stateful", "the GRU trains best with its state carried"
    assert (rows["gpt2"]["training"], rows["gpt2"]["optimizer"]) == ("blocks", "adamw")


def test_the_common_protocol_trains_the_gru_on_shuffled_blocks_with_adamw(tmp_path):
    output = tmp_path / "run"
    command = ["compare", "--preset", "smoke", "--task", "lm", "--models", "gru", "--protocol", "common"]
    assert main([*command, "--output", str(output)]) == 0
    rows = {row["model"]: row for row in json.loads((output / "results.json").read_text())["runs"]}
    assert rows["gru"]["training"] == "blocks"
    assert (rows["gru"]["optimizer"], rows["gru"]["learning_rate"]) == ("adamw", LEARNING_RATES["lm"]["gru"])
    assert math.isfinite(rows["gru"]["test_stream_perplexity"])


@pytest.mark.parametrize(
    ("task", "family", "protocol", "optimizer", "learning_rate", "expected"),
    [
        ("lm", "gru", "best", None, None, ("adamw", 1e-2, 0.01, True)),
        ("lm", "gru", "best", "sgd", None, ("sgd", SGD_LEARNING_RATES["gru"], 0.0, True)),
        ("lm", "lstm", "best", None, None, ("adamw", 1e-2, 0.01, False)),
        ("lm", "lstm", "common", "sgd", 5.0, ("sgd", 5.0, 0.0, False)),
        ("lm", "gru", "common", None, None, ("adamw", LEARNING_RATES["lm"]["gru"], 0.01, False)),
        ("lm", "gpt2", "best", "sgd", None, ("adamw", LEARNING_RATES["lm"]["gpt2"], 0.01, False)),
        ("classify", "gru", "best", "sgd", None, ("adamw", LEARNING_RATES["classify"]["gru"], 0.01, False)),
    ],
)
def test_training_recipes(task, family, protocol, optimizer, learning_rate, expected):
    """--optimizer reaches the recurrent language models only; --learning-rate wins everywhere."""
    recipe = training_recipe(task, family, protocol, optimizer, learning_rate)
    assert (recipe.optimizer, recipe.learning_rate, recipe.weight_decay, recipe.stateful) == expected


def test_sizes_are_matched_within_10_percent(smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    for task in ("lm", "classify"):
        counts = [row["params_non_embedding"] for row in results["runs"] if row["task"] == task]
        assert max(counts) / min(counts) < 1.10, counts


def test_results_markdown_reads_as_a_table(smoke_run, capsys):
    text = (smoke_run / "results.md").read_text()
    assert "## Language modelling" in text and "## Topic classification" in text
    assert "| lstm | 2 x " in text and "| gpt2 | 2 x 32 |" in text
    assert "BERT is a bidirectional encoder" in text
    header = next(line for line in text.splitlines() if line.startswith("| model"))
    assert "non-emb. params" in header and "test ppl" in header


FAULTS = Path(__file__).resolve().parent / "fault_injection.py"
# Kills spread over a run, each in the resumed process of the one before (the counts are that process's calls):
# mid-training before any checkpoint, inside a checkpoint save, right after one, inside the write of results.json,
# after an evaluation (between models), inside a model's final save.
KILLS = [
    ("training-step", 3),
    ("inside-checkpoint", 1),
    ("after-checkpoint", 1),
    ("inside-write", 2),
    ("after-evaluate", 3),
    ("inside-final-save", 1),
]
QUALITY = (
    "val_loss",
    "test_loss",
    "val_perplexity",
    "test_perplexity",
    "test_bits_per_byte",
    "val_accuracy",
    "test_accuracy",
    "test_f1_macro",
)


def killed_at(moment: str, n: int, *command: str) -> None:
    result = subprocess.run(
        [sys.executable, str(FAULTS), moment, str(n), "--", *command],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )
    assert result.returncode == -signal.SIGKILL, (moment, n, result.returncode, result.stderr[-2000:])


def test_compare_resumes_after_kills_at_six_moments_to_the_uninterrupted_results(tmp_path):
    command = ["compare", "--preset", "smoke", "--models", "gru,gpt2"]  # the GRU trains statefully
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert main([*command, "--output", str(straight)]) == 0
    killed_at(*KILLS[0], *command, "--output", str(interrupted))
    for moment, n in KILLS[1:]:
        finished = json.loads((interrupted / "results.json").read_text())["runs"]  # valid JSON at every kill
        assert len(finished) < 4, "each kill lands before the run is done"
        killed_at(moment, n, "compare", "--resume", "--output", str(interrupted))
    assert main(["compare", "--resume", "--output", str(interrupted)]) == 0

    expected = json.loads((straight / "results.json").read_text())["runs"]
    resumed = json.loads((interrupted / "results.json").read_text())["runs"]
    assert [(row["task"], row["model"]) for row in resumed] == [(row["task"], row["model"]) for row in expected]
    for want, got in zip(expected, resumed, strict=True):
        assert got["train_tokens"] == want["train_tokens"], got["model"]
        for key in QUALITY:
            if key in want:
                assert got[key] == pytest.approx(want[key], abs=1e-6, rel=1e-6), (got["task"], got["model"], key)
        assert [point["val_loss"] for point in got["curve"]] == pytest.approx(
            [point["val_loss"] for point in want["curve"]], abs=1e-6
        )
        assert not list((interrupted / got["checkpoint"]).glob("checkpoint-*"))


def test_bad_arguments_get_one_line_errors(tmp_path, capsys):
    assert main(["compare", "--models", "lstm,transformer,lstm-2", "--output", str(tmp_path / "a")]) == 2
    error = capsys.readouterr().err
    assert "Unknown model(s) transformer, lstm-2; choose from rnn, lstm, gru, gpt2, bert" in error
    assert main(["compare", "--task", "lm", "--models", "bert", "--output", str(tmp_path / "b")]) == 2
    assert "no causal perplexity" in capsys.readouterr().err
    assert main(["compare", "--resume"]) == 2
    assert "--resume needs --output" in capsys.readouterr().err
    busy = open_run_folder(tmp_path / "busy")
    busy.claim("results.json")
    (busy.path / "results.json").write_text("{}")
    assert main(["compare", "--preset", "smoke", "--output", str(busy.path)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (busy.path / "results.json").read_text() == "{}"
    for typo in (["--models", "lstmm"], ["--budget-tokens", "0"], ["--dataset", str(tmp_path / "missing.txt")]):
        assert main(["compare", "--overwrite", *typo, "--output", str(busy.path)]) == 2
        assert "error" in capsys.readouterr().err
        assert (busy.path / "results.json").read_text() == "{}", "checked before anything is deleted"
    with pytest.raises(SystemExit):
        main(["compare", "--preset", "huge"])


def test_time_budget_and_pretrained_bert(tmp_path):
    output = tmp_path / "run"
    code = main(
        [
            "compare",
            "--preset",
            "smoke",
            "--task",
            "classify",
            "--models",
            "lstm",
            "--pretrained-bert",
            "minilm",
            "--budget-tokens",
            "10000000",
            "--budget-seconds",
            "1.5",
            "--output",
            str(output),
        ]
    )
    assert code == 0
    results = json.loads((output / "results.json").read_text())
    rows = {row["model"]: row for row in results["runs"]}
    assert set(rows) == {"lstm", "bert-pretrained"}
    assert rows["lstm"]["train_tokens"] < 10_000_000 and 1.5 <= rows["lstm"]["train_seconds"] < 10
    assert rows["bert-pretrained"]["params_total"] > 20_000_000
    assert any("bert-pretrained" in note for note in results["notes"])


def test_a_run_that_fails_after_opening_its_folder_leaves_nothing_behind(tmp_path, capsys):
    """A corpus without labels is found out only once it is loaded: the folder must not block the corrected rerun."""
    data = tmp_path / "novel.txt"
    data.write_text(
        "".join(f"Line {i} of a novel that has no topics at all, and goes on. " * 8 + "\n" for i in range(300))
    )
    output = tmp_path / "run"
    command = ["compare", "--preset", "smoke", "--models", "lstm", "--dataset", str(data), "--output", str(output)]
    assert main([*command, "--task", "classify"]) == 2
    assert "has no label column" in capsys.readouterr().err
    assert not output.exists()
    assert main([*command, "--task", "lm"]) == 0, "the corrected command runs without --overwrite"
    text = (output / "results.md").read_text()
    assert "(classify)" not in text and "BERT" not in text, "the report says only what the run did"
