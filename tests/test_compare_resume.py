"""`hf-evolution compare` over seeds, killed and resumed: per-seed figures, their summary, and a run killed at seven
moments that resumes to the uninterrupted run's figures.

A file of its own so that its runs go to another test worker than the single-seed smoke run's."""

import csv
import json
import statistics

import jsonschema
import pytest
from conftest import killed_at

from hf_evolution.cli import main
from hf_evolution.compare.report import results_schema

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
    ("between-models", 1),
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


TWO_SEEDS = ["compare", "--preset", "smoke", "--models", "gru", "--seeds", "2", "--protocol", "stateful"]


@pytest.fixture(scope="module")
def two_seed_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("compare") / "two-seeds"
    assert main([*TWO_SEEDS, "--output", str(output)]) == 0
    return output


def test_two_seeds_give_their_own_figures_and_the_summary_is_their_mean(two_seed_run):
    results = json.loads((two_seed_run / "results.json").read_text())
    assert [(row["task"], row["seed"]) for row in results["runs"]] == [
        ("lm", 42),
        ("lm", 43),
        ("classify", 42),
        ("classify", 43),
    ]
    for task in ("lm", "classify"):
        runs = [row for row in results["runs"] if row["task"] == task]
        (summary,) = [row for row in results["summary"] if row["task"] == task]
        assert summary["seeds"] == [42, 43] and summary["n_seeds"] == 2
        for key in ("val_loss", "test_loss", "test_perplexity" if task == "lm" else "test_accuracy"):
            values = [row[key] for row in runs]
            assert summary[key] == pytest.approx(statistics.fmean(values), rel=1e-12), key
            assert summary[f"{key}_std"] == pytest.approx(statistics.stdev(values), rel=1e-12), key
            assert summary[f"{key}_ci95"] is None, "no interval from two seeds"
        assert runs[0]["val_loss"] != runs[1]["val_loss"], "initialisation and data order change with the seed"
        assert runs[0]["curve"] != runs[1]["curve"]
        assert summary["params_total"] == runs[0]["params_total"] and isinstance(summary["params_total"], int)
        assert runs[0]["checkpoint"] != runs[1]["checkpoint"]
    table = (two_seed_run / "results.md").read_text()
    assert "Seeds 42, 43: every figure is the mean" in table and " ± " in table and "| model | seeds |" in table
    with open(two_seed_run / "results.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["model"] for row in rows] == ["gru", "gru"] and float(rows[0]["test_loss_std"]) > 0
    with open(two_seed_run / "results_per_seed.csv") as file:
        assert [row["seed"] for row in csv.DictReader(file)] == ["42", "43", "42", "43"]


def test_results_with_seeds_follow_the_shipped_schema_which_refuses_what_is_missing(two_seed_run):
    validator = jsonschema.Draft202012Validator(results_schema())
    results = json.loads((two_seed_run / "results.json").read_text())
    validator.validate(results)
    broken = json.loads(json.dumps(results))
    del broken["runs"][0]["seed"]
    broken["summary"][0]["test_loss_std"] = -1.0
    broken["settings"]["pooling"] = "first"
    messages = sorted(error.message for error in validator.iter_errors(broken))
    assert len(messages) == 3 and any("'seed' is a required property" in message for message in messages)


def test_compare_resumes_after_kills_at_seven_moments_to_the_uninterrupted_results(two_seed_run, tmp_path, capsys):
    interrupted = tmp_path / "interrupted"
    killed_at(*KILLS[0], *TWO_SEEDS, "--output", str(interrupted))
    finished_before = []
    for moment, n in KILLS[1:]:
        finished = json.loads((interrupted / "results.json").read_text())["runs"]  # valid JSON at every kill
        assert len(finished) < 4, "each kill lands before the run is done"
        assert finished[: len(finished_before)] == finished_before, "a finished (model, seed) is never redone"
        finished_before = finished
        killed_at(moment, n, "compare", "--resume", "--output", str(interrupted))
    finished_before = json.loads((interrupted / "results.json").read_text())["runs"]
    assert [(row["task"], row["seed"]) for row in finished_before] == [("lm", 42)], "the last kill is between seeds"
    capsys.readouterr()
    assert main(["compare", "--resume", "--output", str(interrupted)]) == 0
    assert "[1/4] lm gru seed 42 lr 0.01: finished earlier, skipped" in capsys.readouterr().out

    expected = json.loads((two_seed_run / "results.json").read_text())["runs"]
    resumed = json.loads((interrupted / "results.json").read_text())["runs"]
    assert resumed[:1] == finished_before, "the model finished before the last kill is kept as it was"
    assert [(row["task"], row["seed"]) for row in resumed] == [(row["task"], row["seed"]) for row in expected]
    for want, got in zip(expected, resumed, strict=True):
        assert got["train_tokens"] == want["train_tokens"], got["model"]
        for key in QUALITY:
            if key in want:
                assert got[key] == pytest.approx(want[key], abs=1e-6, rel=1e-6), (got["task"], got["model"], key)
        assert [point["val_loss"] for point in got["curve"]] == pytest.approx(
            [point["val_loss"] for point in want["curve"]], abs=1e-6
        )
        assert not list((interrupted / got["checkpoint"]).glob("checkpoint-*"))
