"""The output-folder policy of every command, tried as a hostile user would: nothing the manifest does not name is
ever deleted, inputs are never inside or equal to what is deleted, symbolic links are handled, and siblings are
touched only by the exact names the package creates."""

import os
import shutil
from pathlib import Path

import pytest
from conftest import load_example
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_evolution.cli import main
from hf_evolution.runs import (
    MANIFEST,
    check_output_folder,
    classify,
    open_run_folder,
    read_manifest,
    write_folder_atomically,
    write_text,
)
from hf_evolution.training.trainer import REMOTE_CODE_FILES, SAVED_MODEL_FILES

FAST = ["--size", "tiny", "--report_to", "none", "--seed", "7", "--block_size", "32", "--sample_tokens", "0"]


run_clm = load_example("run_clm")


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every file's bytes and every link's target under `folder`, by relative path."""
    found = {}
    for root, folders, files in os.walk(folder):
        for name in (*folders, *files):
            path = Path(root, name)
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink():
                found[relative] = f"-> {os.readlink(path)}"
            elif path.is_file():
                found[relative] = path.read_bytes()
    return found


@pytest.fixture(scope="module")
def clm_run(tmp_path_factory, tiny_tokenizer_folder):
    """A finished run_clm output of a minGRU (whose code files are its own), with checkpoints."""
    output = tmp_path_factory.mktemp("clm") / "mingru"
    run_clm.main(
        [*FAST, "--model_type", "mingru", "--tokenizer_name", tiny_tokenizer_folder, "--output_dir", str(output)]
        + ["--do_train", "--max_steps", "2", "--save_steps", "1", "--max_eval_samples", "8"]
    )
    return output


@pytest.fixture(scope="module")
def tiny_tokenizer_folder(tmp_path_factory, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("tokenizer")
    tiny_tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("compare") / "run"
    assert main(["compare", "--preset", "smoke", "--task", "lm", "--models", "rnn", "--output", str(output)]) == 0
    return output


# --- 1. the output is an input ------------------------------------------------------------------------------------


def test_an_overwrite_into_its_own_input_is_refused_by_every_run_command(clm_run, capsys):
    before = snapshot(clm_run)
    with pytest.raises(ValueError, match="would delete the input"):
        run_clm.main([*FAST, "--model_name_or_path", str(clm_run), "--output_dir", str(clm_run), "--overwrite"])
    probe = ["probe", "context", "--preset", "smoke", "--model", str(clm_run), "--output", str(clm_run)]
    compare = ["compare", "--preset", "smoke", "--tokenizer", str(clm_run), "--output", str(clm_run)]
    for command in (probe, compare):
        assert main([*command, "--overwrite"]) == 2
        assert "would delete the input" in capsys.readouterr().err
    assert snapshot(clm_run) == before


def test_an_overwrite_that_would_delete_a_folder_holding_an_input_is_refused(compare_run, capsys):
    tokenizer = compare_run / "tokenizer"
    before = snapshot(compare_run)
    command = ["compare", "--preset", "smoke", "--tokenizer", str(tokenizer), "--output", str(compare_run)]
    assert main([*command, "--overwrite"]) == 2
    assert "holds" in capsys.readouterr().err and snapshot(compare_run) == before


# --- 2. and 3. foreign files inside owned folders, and names that only look like ours ----------------------------


@pytest.mark.parametrize(
    "foreign",
    [
        "models/mystuff/a",  # inside a folder the package owns
        "models/lm-rnn-seed42/notes.txt",  # inside a saved model
        "checkpoint-notes.txt",  # Trainer-like names
        "checkpoint-best-i-kept/weights.bin",
        "tmp-checkpoint-3/x",
        ".draft.tmp-keep",  # an atomic-write-like name
        ".results.csv.tmp-keep",
        "tokenizer/.notes.tmp-12",  # a temporary of a file the run never wrote
        "model-00001-of-00002.safetensors",  # a shard without a claimed index
    ],
)
def test_a_run_folder_holding_a_foreign_file_anywhere_is_refused_and_kept(compare_run, tmp_path, foreign, capsys):
    assert check_output_folder(compare_run, overwrite=True, resumable=True), "every file compare wrote is claimed"
    run = tmp_path / "run"
    shutil.copytree(compare_run, run, symlinks=True)
    (run / foreign).parent.mkdir(parents=True, exist_ok=True)
    (run / foreign).write_text("mine")
    before = snapshot(run)
    assert main(["compare", "--preset", "smoke", "--task", "lm", "--models", "rnn", "--output", str(run)]) == 2
    assert main(["compare", "--preset", "smoke", "--task", "lm", "--overwrite", "--output", str(run)]) == 2
    assert capsys.readouterr().err.count("did not write") == 2
    assert snapshot(run) == before


def test_every_file_a_minrnn_script_run_writes_is_claimed_so_it_can_be_overwritten(clm_run, tmp_path):
    assert {"configuration_minrnn.py", "modeling_minrnn.py"} <= set(REMOTE_CODE_FILES)
    assert (clm_run / "modeling_minrnn.py").is_file() and list(clm_run.glob("checkpoint-*"))
    run = tmp_path / "run"
    shutil.copytree(clm_run, run, symlinks=True)
    owned, foreign = classify(run, read_manifest(run))
    assert foreign == [] and owned
    open_run_folder(run, overwrite=True)
    assert [entry.name for entry in run.iterdir()] == [MANIFEST]


def test_what_a_model_save_writes_is_named_in_the_saved_files(tmp_path, tiny_tokenizer):
    from conftest import make_model

    for family in ("lstm", "mingru"):
        folder = tmp_path / family
        make_model(family).save_pretrained(folder)
        tiny_tokenizer.save_pretrained(folder)
        assert {path.name for path in folder.iterdir()} <= set(SAVED_MODEL_FILES), family


# --- 4. and 5. siblings and symbolic links of a replaced output --------------------------------------------------


def fill(files: dict[str, str]):
    def write(folder: Path) -> None:
        for name, text in files.items():
            (folder / name).write_text(text)

    return write


def test_a_replaced_output_touches_siblings_only_by_their_exact_names(tmp_path):
    for name in ("exp", "*", "a.b", "[x]"):
        out = tmp_path / name
        lookalikes = [f".{name}.old-backup", f".{name}.tmp-keep", f".{name}x.tmp-9", ".other.tmp-9", f".{name}.old-7"]
        for lookalike in lookalikes:  # a user's folders, one with exactly our name but no manifest of ours
            (tmp_path / lookalike).mkdir(exist_ok=True)
            (tmp_path / lookalike / "keep.txt").write_text("mine")
        before = snapshot(tmp_path)
        write_folder_atomically(out, fill({"a.txt": "1"}))
        check_output_folder(out, overwrite=True)
        write_folder_atomically(out, fill({"b.txt": "2"}))
        after = snapshot(tmp_path)
        assert {key: value for key, value in after.items() if not key.startswith(f"{name}/")} == {
            key: value for key, value in before.items() if not key.startswith(f"{name}/")
        }
        assert sorted(path.name for path in out.iterdir()) == [MANIFEST, "b.txt"]


def test_a_link_to_a_folder_is_written_through_and_stays_a_link(tmp_path):
    target, link = tmp_path / "real", tmp_path / "link"
    target.mkdir()
    link.symlink_to(target)
    write_folder_atomically(link, fill({"a.txt": "1"}))
    check_output_folder(link, overwrite=True)
    write_folder_atomically(link, fill({"b.txt": "2"}))
    assert link.is_symlink() and (link / "b.txt").read_text() == "2" and not (target / "a.txt").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["link", "real"], "no stray temporary or old folder"
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="symbolic link to .*nowhere, which does not exist"):
        check_output_folder(tmp_path / "gone", overwrite=True)


def test_the_deploy_commands_accept_a_linked_output_and_refuse_the_working_directory(tmp_path, monkeypatch, capsys):
    from conftest import make_model

    model = tmp_path / "model"
    make_model("lstm").save_pretrained(model)
    target, link = tmp_path / "quantized", tmp_path / "link"
    target.mkdir()
    link.symlink_to(target)
    for _ in range(2):
        assert main(["quantize", str(model), str(link), "--overwrite"]) == 0
    assert link.is_symlink() and (target / MANIFEST).is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["link", "model", "quantized"]
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    for command in (["quantize", str(model), "."], ["export", "onnx", str(model), "."]):
        assert main([*command, "--overwrite"]) == 2
        assert "is or holds the working directory" in capsys.readouterr().err
    assert list(empty.iterdir()) == []


# --- the property: random trees, every policy, no foreign byte lost ---------------------------------------------

NAMES = st.sampled_from(
    [
        "a",
        "b.txt",
        "checkpoint-3",
        "checkpoint-notes.txt",
        "tmp-checkpoint-1",
        ".a.tmp-5",
        ".b.txt.tmp-77",
        ".x.tmp-keep",
        "model-00001-of-00002.safetensors",
        "model.safetensors.index.json",
        "*",
        ".run.old-3",
        ".run.tmp-4",
    ]
)
PATHS = st.lists(NAMES, min_size=1, max_size=3).map("/".join)


@st.composite
def trees(draw):
    """A run folder of owned paths (claimed files, claimed folders, whole folders, companions), foreign files and
    links anywhere outside the whole folders, and an input equal to, inside, above or beside the output."""
    owned_files = draw(st.lists(PATHS, max_size=6, unique=True))
    wholes = draw(st.lists(PATHS, max_size=2, unique=True))
    foreign_files = draw(st.lists(PATHS, max_size=6, unique=True))
    links = draw(st.lists(st.tuples(PATHS, st.sampled_from(["owned", "foreign", "outside"])), max_size=2))
    inputs = draw(st.sampled_from(["none", "equal", "inside-owned", "inside-foreign", "above", "beside"]))
    mode = draw(st.sampled_from(["run-overwrite", "run-discard", "replace", "write-folder"]))
    return owned_files, wholes, foreign_files, links, inputs, mode


def is_prefix(path: str, other: str) -> bool:
    return other == path or other.startswith(path + "/")


@given(tree=trees())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_policy_ever_loses_a_foreign_byte(tmp_path_factory, tree):
    owned_files, wholes, foreign_files, links, inputs, mode = tree
    base = tmp_path_factory.mktemp("tree")
    run = base / "run"
    folder = open_run_folder(run)
    claimed = []
    for path in owned_files:
        if any(is_prefix(other, path) or is_prefix(path, other) for other in claimed + wholes if other != path):
            continue  # one path cannot be both a file and a folder
        folder.claim(path)
        (run / path).parent.mkdir(parents=True, exist_ok=True)
        write_text(run / path, "ours")
        claimed.append(path)
    for path in wholes:
        if any(is_prefix(other, path) or is_prefix(path, other) for other in claimed):
            continue
        folder.claim(path, whole=True)
        (run / path).mkdir(parents=True, exist_ok=True)
        (run / path / "inside").write_text("ours")
    manifest = read_manifest(run)
    entries, whole = set(manifest["entries"]), set(manifest["whole"])
    (base / "beside").mkdir()
    (base / "beside" / "data.txt").write_text("input")
    (base / ".run.tmp-9").mkdir()  # a user's lookalike of our temporaries, beside the output
    (base / ".run.tmp-9" / "f").write_text("mine")
    foreign = []
    for path in foreign_files:
        parts = path.split("/")
        prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
        if any(prefix in whole for prefix in prefixes) or any(is_prefix(path, name) for name in entries | whole):
            continue  # inside a folder claimed whole, or at a claimed path: ours by definition
        if any(prefix in entries and not (run / prefix).is_dir() for prefix in prefixes[:-1]):
            continue  # below a claimed file
        name = parts[-1]
        companion = name.startswith(".") and ".tmp-" in name and name[-1].isdigit()
        if companion or name.startswith("model-0"):
            continue  # a companion of a claimed file (its atomic-write temporary, a shard): ours by definition
        try:
            (run / path).parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            continue  # below a foreign file
        if (run / path).is_dir():
            continue
        (run / path).write_text("foreign")
        foreign.append(path)
    for path, points_to in links:
        link = run / "links" / path.replace("/", "_")
        link.parent.mkdir(exist_ok=True)
        if "links" in entries or os.path.lexists(link):
            continue
        target = {"owned": run / claimed[0] if claimed else base, "foreign": base / "beside", "outside": base}
        link.symlink_to(target[points_to])
    protected = {
        "none": [],
        "equal": [run],
        "inside-owned": [run / claimed[0]] if claimed else [],
        "inside-foreign": [run / foreign[0]] if foreign else [],
        "above": [base],
        "beside": [base / "beside" / "data.txt"],
    }[inputs]
    kept_before = {key: value for key, value in snapshot(base).items() if not key.startswith("run/")}
    foreign_before = {key: value for key, value in snapshot(run).items() if key.split("/")[0] == "links"}
    foreign_before.update({path: b"foreign" for path in foreign})
    protected_before = {str(item): snapshot(item) if item.is_dir() else item.read_bytes() for item in protected}

    try:
        if mode == "run-overwrite":
            open_run_folder(run, overwrite=True, protected=protected)
        elif mode == "run-discard":
            folder.discard()
        elif mode == "replace":
            check_output_folder(run, overwrite=True, protected=protected)
            write_folder_atomically(run, fill({"new.txt": "new"}))
        else:
            folder.write_folder(claimed[0] if claimed else "tokenizer", fill({"vocab.json": "{}"}))
    except (ValueError, OSError):
        pass

    after = snapshot(run) if run.is_dir() else {}
    for path, content in foreign_before.items():
        assert after.get(path) == content, (mode, path)
    assert {key: value for key, value in snapshot(base).items() if not key.startswith("run/")} == kept_before
    if mode in ("run-discard", "write-folder") or inputs == "above":
        return  # these delete only what the run itself wrote, which an input above the folder may hold
    for item in protected:
        now = snapshot(item) if item.is_dir() else item.read_bytes() if item.exists() else None
        assert now == protected_before[str(item)], (mode, inputs, item)


def test_a_refusal_suggests_only_the_resume_flag_the_command_has(clm_run, tmp_path, capsys):
    with pytest.raises(FileExistsError, match="--resume_from_checkpoint last to continue it") as refused:
        run_clm.main([*FAST, "--model_type", "rnn", "--output_dir", str(clm_run), "--do_train"])
    assert "--resume " not in str(refused.value) + " "
    probe = ["probe", "speed", "--preset", "smoke", "--models", "rnn", "--output", str(tmp_path / "probe")]
    probe += ["--lengths", "8", "--contexts", "8"]
    assert main(probe) == 0
    assert main(probe) == 2
    error = capsys.readouterr().err
    assert "Pass --overwrite to replace it, or choose" in error and "--resume" not in error


def test_a_run_folder_of_an_earlier_version_is_refused_as_such(tmp_path):
    run = tmp_path / "run"
    (run / "models" / "lstm").mkdir(parents=True)
    (run / "models" / "lstm" / "config.json").write_text("{}")
    (run / MANIFEST).write_text('{"tool": "hf_evolution", "entries": ["models"], "patterns": ["checkpoint-*"]}')
    with pytest.raises(FileExistsError, match="written by an earlier hf_evolution"):
        open_run_folder(run, overwrite=True)
    assert (run / "models" / "lstm" / "config.json").read_text() == "{}"
