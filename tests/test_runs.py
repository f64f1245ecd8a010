"""The run layer: the output-folder policy (what --overwrite deletes and what it refuses), atomic files, the
environment record, the shared tokenizer, tables."""

import json
import os

import pytest

from hf_evolution import reporting
from hf_evolution.reporting import markdown_table, plot_confusion_matrix
from hf_evolution.runs import (
    MANIFEST,
    best_time,
    environment,
    open_run_folder,
    pick_device,
    shared_tokenizer,
    write_json,
)


def test_a_new_folder_is_created_and_claimed_and_a_run_in_it_is_refused_unless_overwrite(tmp_path):
    folder = open_run_folder(tmp_path / "run")
    folder.claim("results.json", "models")
    (folder.path / "results.json").write_text("{}")
    (folder.path / "models").mkdir()
    with pytest.raises(FileExistsError, match="already holds a run. Pass --overwrite"):
        open_run_folder(folder.path)
    assert (folder.path / "results.json").exists(), "refusing loses nothing"
    assert open_run_folder(folder.path, resume=True).path == folder.path
    replaced = open_run_folder(folder.path, overwrite=True)
    assert sorted(entry.name for entry in replaced.path.iterdir()) == [MANIFEST]
    with pytest.raises(ValueError, match="Choose one"):
        open_run_folder(folder.path, overwrite=True, resume=True)


def test_overwrite_never_deletes_what_the_package_did_not_write(tmp_path):
    folder = open_run_folder(tmp_path / "run")
    folder.claim("results.json")
    folder.claim("checkpoint-7", whole=True)  # claimed by its exact name before Trainer fills it
    (folder.path / "results.json").write_text("{}")
    (folder.path / "checkpoint-7").mkdir()
    (folder.path / "checkpoint-7" / "optimizer.pt").write_text("state")
    (folder.path / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match=r"did not write \(notes.txt\); it never deletes those"):
            open_run_folder(folder.path, overwrite=overwrite)
    assert (folder.path / "notes.txt").read_text() == "mine" and (folder.path / "results.json").exists()
    (folder.path / "notes.txt").unlink()
    open_run_folder(folder.path, overwrite=True)
    assert not (folder.path / "checkpoint-7").exists() and not (folder.path / "results.json").exists()


def test_a_folder_without_a_manifest_is_foreign_even_if_it_looks_like_a_run(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(FileExistsError, match="did not write"):
        open_run_folder(tmp_path, overwrite=True)
    with pytest.raises(FileNotFoundError, match="Nothing to resume"):
        open_run_folder(tmp_path, resume=True)
    assert (tmp_path / "results.json").read_text() == "{}"


def test_overwrite_refuses_to_delete_the_working_directory_or_an_input(tmp_path, monkeypatch):
    folder = open_run_folder(tmp_path / "run")
    folder.claim("data/train.txt", "work")
    (folder.path / "data").mkdir()
    (folder.path / "data" / "train.txt").write_text("text")
    (folder.path / "work").mkdir()
    with pytest.raises(ValueError, match="holds .*train.txt"):
        open_run_folder(folder.path, overwrite=True, protected=[folder.path / "data" / "train.txt"])
    monkeypatch.chdir(folder.path / "work")
    with pytest.raises(ValueError, match="the working directory or an input"):
        open_run_folder(folder.path, overwrite=True)
    assert (folder.path / "data" / "train.txt").exists() and (folder.path / "work").is_dir()


def test_the_working_directory_itself_is_never_deleted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = open_run_folder(".")
    folder.claim("results.json")
    (tmp_path / "results.json").write_text("{}")
    open_run_folder(".", overwrite=True)
    assert tmp_path.is_dir() and not (tmp_path / "results.json").exists()


def test_a_failure_before_any_result_removes_what_the_run_wrote(tmp_path):
    folder = open_run_folder(tmp_path / "new")
    with pytest.raises(ValueError, match="late"), folder.discarded_on_failure():
        folder.claim("tokenizer")
        (folder.path / "tokenizer").mkdir()
        raise ValueError("a late error")
    assert not folder.path.exists(), "the folder it created is gone, so the corrected rerun needs no --overwrite"

    existing = tmp_path / "existing"
    existing.mkdir()
    folder = open_run_folder(existing)
    with pytest.raises(ValueError), folder.discarded_on_failure():
        folder.claim("results.json")
        write_json(existing / "results.json", {})
        raise ValueError("late")
    assert existing.is_dir() and not any(existing.iterdir()), "a folder it did not create stays, emptied of its files"

    kept = open_run_folder(tmp_path / "kept")
    with pytest.raises(ValueError), kept.discarded_on_failure():
        kept.claim("results.json")
        write_json(kept.path / "results.json", {"runs": [1]})
        kept.mark_progress()
        raise ValueError("after a finished model")
    assert json.loads((kept.path / "results.json").read_text()) == {"runs": [1]}


def test_write_json_is_atomic_and_environment_names_versions_and_machine(tmp_path):
    write_json(tmp_path / "r.json", {"environment": environment(), "loss": 1.5})
    payload = json.loads((tmp_path / "r.json").read_text())
    assert payload["loss"] == 1.5 and payload["environment"]["versions"]["transformers"].startswith("5.")
    assert payload["environment"]["machine"]["cpu_count"] == os.cpu_count()
    assert [path.name for path in tmp_path.iterdir()] == ["r.json"], "no temporary file is left"


def test_device_choice_and_timer():
    assert pick_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        pick_device("tpu")
    calls = []
    assert best_time(lambda: calls.append(1), repeats=3, warmup=2) >= 0 and len(calls) == 5


def test_shared_tokenizer_trains_once_and_reloads_the_saved_copy(tmp_path, bbc_news):
    train = bbc_news["train"].select(range(50))
    trained = shared_tokenizer("char", train, folder=tmp_path / "tokenizer")
    assert (tmp_path / "tokenizer" / "tokenizer.json").is_file()
    again = shared_tokenizer("char", train.select(range(5)), folder=tmp_path / "tokenizer")
    assert again.get_vocab() == trained.get_vocab(), "a resumed run reads the saved tokenizer, not a new one"
    assert shared_tokenizer(str(tmp_path / "tokenizer"), None).get_vocab() == trained.get_vocab()


def test_markdown_table_formats_numbers():
    table = markdown_table(
        [{"model": "lstm", "params": 1234567, "ppl": 123.456, "bpb": 1.23456, "acc": None}],
        {"model": "model", "params": "params", "ppl": "perplexity", "bpb": "bits/byte", "acc": "accuracy"},
    )
    assert table.splitlines()[2] == "| lstm | 1,234,567 | 123.5 | 1.23 | n/a |"


def test_confusion_matrix_is_a_png_that_shows_the_counts(tmp_path, monkeypatch):
    path = plot_confusion_matrix([[5, 1], [0, 12]], ["sport", "tech"], tmp_path / "matrix.png", "gru")
    assert path == tmp_path / "matrix.png" and path.read_bytes().startswith(b"\x89PNG")
    shown = []
    monkeypatch.setattr(reporting, "save_figure", lambda figure, path: shown.append(figure.axes[0]))
    plot_confusion_matrix([[5, 1], [0, 12]], ["sport", "tech"], tmp_path / "again.png", "gru")
    assert sorted(text.get_text() for text in shown[0].texts) == ["0", "1", "12", "5"]
    assert [label.get_text() for label in shown[0].get_xticklabels()] == ["sport", "tech"]
