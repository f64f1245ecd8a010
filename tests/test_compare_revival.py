"""`hf-evolution compare --models revival`: minGRU, minLSTM and Mamba in the order of the line, Mamba's missing head.

A file of its own so that its run (Mamba trains slowly on CPU) goes to another test worker than the classic line's."""

import json
import math

import jsonschema
import pytest

from hf_evolution.cli import main
from hf_evolution.compare.report import results_schema
from hf_evolution.families import count_for_config, matched_config


@pytest.fixture(scope="module")
def revival_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("compare") / "revival"
    # Short blocks and budget: transformers' Mamba trains at a cost that grows with the square of the length on CPU.
    command = ["compare", "--preset", "smoke", "--models", "revival", "--budget-tokens", "4096", "--block-size", "32"]
    assert main([*command, "--output", str(output)]) == 0
    return output


def test_the_revival_runs_in_the_order_of_the_line_and_mamba_says_why_it_does_not_classify(revival_run):
    results = json.loads((revival_run / "results.json").read_text())
    models = {task: [row["model"] for row in results["runs"] if row["task"] == task] for task in ("lm", "classify")}
    assert models == {"lm": ["mingru", "minlstm", "mamba"], "classify": ["mingru", "minlstm"]}
    rows = {row["model"]: row for row in results["runs"] if row["task"] == "lm"}
    gpt2_count = count_for_config(matched_config("gpt2", "tiny", 320), "lm")
    for family, row in rows.items():
        assert abs(row["params_non_embedding"] - gpt2_count) / gpt2_count < 0.1, family  # vocab 320 vs the run's
        assert math.isfinite(row["test_stream_perplexity"]) and row["generation_tokens_per_second"] > 0, family
    assert rows["mingru"]["stream_protocol"].startswith("state carried")
    assert rows["mamba"]["stream_protocol"].startswith("sliding window"), "Mamba's scan cannot continue a block"
    assert rows["mamba"]["shape"].startswith("4 x "), "twice GPT-2's depth"
    note = "transformers has no sequence classification head for Mamba, so it is compared on language modelling only."
    assert note in results["notes"]
    text = (revival_run / "results.md").read_text()
    assert "| mamba: not run, transformers has no sequence classification head for Mamba |" in text
    for task in ("lm", "classify"):
        assert (revival_run / f"{task}_quality_vs_parameters.png").stat().st_size > 10_000


def test_revival_results_follow_the_shipped_schema(revival_run):
    validator = jsonschema.Draft202012Validator(results_schema())
    validator.validate(json.loads((revival_run / "results.json").read_text()))
