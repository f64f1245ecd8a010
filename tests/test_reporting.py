"""Run folders refuse to lose work; tables and JSON are written whole."""

import json

import pytest

from hf_evolution.reporting import environment, markdown_table, prepare_output_dir, write_json


def test_output_folder_is_refused_when_it_holds_a_run(tmp_path):
    run = prepare_output_dir(tmp_path / "run")
    (run / "results.json").write_text("{}")
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare_output_dir(run)
    assert (run / "results.json").exists(), "refusing loses nothing"
    assert prepare_output_dir(run, resume=True) == run
    assert not any(prepare_output_dir(run, overwrite=True).iterdir())
    with pytest.raises(FileNotFoundError, match="Nothing to resume"):
        prepare_output_dir(tmp_path / "empty", resume=True)
    with pytest.raises(ValueError, match="Choose one"):
        prepare_output_dir(run, overwrite=True, resume=True)


def test_write_json_and_environment(tmp_path):
    write_json(tmp_path / "r.json", {"environment": environment(), "loss": 1.5})
    payload = json.loads((tmp_path / "r.json").read_text())
    assert payload["loss"] == 1.5 and payload["environment"]["versions"]["transformers"].startswith("5.")
    assert not list(tmp_path.glob("*.tmp"))


def test_markdown_table_formats_numbers():
    table = markdown_table(
        [{"model": "lstm", "params": 1234567, "ppl": 123.456, "bpb": 1.23456, "acc": None}],
        {"model": "model", "params": "params", "ppl": "perplexity", "bpb": "bits/byte", "acc": "accuracy"},
    )
    assert table.splitlines()[2] == "| lstm | 1,234,567 | 123.5 | 1.23 | n/a |"
