"""What `hf-evolution compare` says about data it cannot use: one line naming the file or the flag, exit code 2,
before any training, and no run folder left behind."""

import pytest

from hf_evolution.cli import main

DATA = {
    "ragged.csv": (
        "text,label\nfine,a\none, two,b\nmore,a\n",
        "is not well-formed CSV: the row at line 3 has 3 field(s), the header 2 (text, label)",
    ),
    "unclosed.csv": (
        'text,label\nfine,a\n"never closed,b\nmore,a\n',
        "is not well-formed CSV: the row at line 3 opens a quote that is never closed",
    ),
    "two_texts.csv": (
        "title,body,label\n" + "".join(f"title {i},body {i},{i % 2}\n" for i in range(20)),
        "Cannot tell which column of",
    ),
}


@pytest.mark.parametrize("name", DATA)
def test_compare_refuses_data_it_cannot_read_in_one_line(tmp_path, capsys, name):
    text, message = DATA[name]
    path = tmp_path / name
    path.write_text(text)
    output = tmp_path / "run"
    command = ["compare", "--preset", "smoke", "--models", "lstm", "--dataset", str(path), "--output", str(output)]
    assert main(command) == 2
    stderr = capsys.readouterr().err
    error = stderr.strip().splitlines()[-1]  # after the progress bars of the loading, if any
    assert error.startswith("hf-evolution compare: error: ") and "Traceback" not in stderr, stderr
    assert message in error and name in error
    if name == "two_texts.csv":
        assert error.endswith("Name it with --text-column, or call that column 'text'."), "compare's flag"
    assert not output.exists(), "refused before anything was trained or kept"


def test_compare_names_its_own_flag_for_a_column_that_is_not_there(tmp_path, capsys):
    path = tmp_path / "data.csv"
    path.write_text("text,label\n" + "".join(f"document {i},{i % 2}\n" for i in range(20)))
    output = tmp_path / "run"
    command = [
        "compare",
        "--preset",
        "smoke",
        "--dataset",
        str(path),
        "--text-column",
        "body",
        "--output",
        str(output),
    ]
    assert main(command) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("hf-evolution compare: error: Column 'body' (given as --text-column) is not in the")
    assert not output.exists()
