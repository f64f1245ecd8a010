"""Every command the README, CONTRIBUTING.md and docs/*.md quote parses with the real parser, and every relative link
points to a file (and heading) that exists: a renamed flag or a moved page fails here, not in a reader's terminal.

Nothing runs: `hf-evolution` commands go through `hf_evolution.cli.build_parser()` (and `--models` through the
family check its commands make before any work), the example scripts through their own `HfArgumentParser` and
`check_arguments` (data files aside, since the docs name files of the reader's), and the benchmark and docs scripts,
which build their parser inside `main`, run as `__main__` only until their `parse_args` returns."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import io
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = {"examples/run_clm.py": "lm", "examples/run_classification.py": "classify"}
SCRIPT_FOLDERS = ("benchmarks", "docs")
LAUNCHERS = ("torchrun", "accelerate")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# The fewest commands the documents quote; fewer means the extraction broke, not that the docs got shorter.
MIN_COMMANDS = 20


class BadCommand(Exception):
    """A quoted command that its parser refuses."""


class Parsed(Exception):
    """Raised as soon as a script's `parse_args` returns, so that nothing after it runs."""


def substitute_commands(line: str) -> str:
    """`"$(python -c "...")"` stands for a value the shell computes: a placeholder value, parens balanced."""
    while (start := line.find("$(")) != -1:
        depth, end = 0, start + 1
        for end in range(start + 1, len(line)):
            depth += {"(": 1, ")": -1}.get(line[end], 0)
            if depth == 0:
                break
        line = line[:start] + "SUBSTITUTED" + line[end + 1 :]
    return line


def fenced_lines(text: str) -> list[str]:
    """The lines of the fenced code blocks, backslash continuations joined."""
    lines = []
    for block in FENCE.findall(text):
        joined = block.split("\n", 1)[1].rsplit("```", 1)[0].replace("\\\n", " ")
        lines += joined.splitlines()
    return lines


def as_command(words: list[str]) -> list[str] | None:
    """The command a shell line runs, as [program, *arguments] (a script as `python PATH`), or None for a command
    this test does not check (pip, pytest, ruff, ...)."""
    while words and ASSIGNMENT.match(words[0]):  # OMP_NUM_THREADS=1 hf-evolution ...
        words = words[1:]
    if words and words[0] in LAUNCHERS:  # torchrun/accelerate launch OPTIONS SCRIPT ARGS: the script's arguments
        scripts = [index for index, word in enumerate(words) if word.endswith(".py")]
        words = ["python", *words[scripts[0] :]] if scripts else []
    if not words:
        return None
    if words[0] == "hf-evolution":
        return words
    if words[0] == "python" and len(words) > 1:
        script = words[1]
        if script in EXAMPLES or (Path(script).parent.as_posix() in SCRIPT_FOLDERS and script.endswith(".py")):
            return words
    return None


def commands_in(markdown: str) -> list[list[str]]:
    """Every command of the fenced blocks of a page, each part of `a && b` on its own, comments dropped."""
    commands = []
    for line in fenced_lines(markdown):
        for part in re.split(r"&&|;", substitute_commands(line)):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:  # not a shell line (Python code in a block, say)
                continue
            if (command := as_command(words)) is not None:
                commands.append(command)
    return commands


def quoted_commands() -> list[tuple[str, list[str]]]:
    """(where, command) for every command the documents quote."""
    return [
        (f"{document.relative_to(ROOT)}: {' '.join(command)}", command)
        for document in DOCUMENTS
        for command in commands_in(document.read_text())
    ]


def load_module(path: Path):
    name = "docs_commands_" + path.stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def check_hf_evolution(arguments: list[str]) -> None:
    from hf_evolution.cli import build_parser
    from hf_evolution.families import requested_models

    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = build_parser().parse_args(arguments)
    except SystemExit as exit:
        raise BadCommand(errors.getvalue().strip() or f"exit {exit.code}") from None
    if isinstance(getattr(args, "models", None), str):
        try:
            requested_models(args.models)
        except ValueError as error:
            raise BadCommand(str(error)) from None


def check_example(script: str, arguments: list[str]) -> None:
    """The script's own parser; then, for a complete command (no `...`), the checks it makes before any work."""
    from transformers import HfArgumentParser

    from hf_evolution.training.scripts import check_arguments

    module = load_module(ROOT / script)
    elided = "..." in arguments
    arguments = [word for word in arguments if word != "..."]
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            if hasattr(module, "parse_arguments"):
                model_args, data_args, _ = module.parse_arguments(arguments)
            else:
                parser = HfArgumentParser(
                    (module.ModelArguments, module.DataTrainingArguments, module.EvolutionTrainingArguments)
                )
                model_args, data_args, _ = parser.parse_args_into_dataclasses(args=arguments)
        if not elided:  # the reader's own files (my_text.txt) are not here: their checks are left out
            files = dict.fromkeys(("train_file", "validation_file", "test_file"))
            check_arguments(model_args, dataclasses.replace(data_args, **files), task=EXAMPLES[script])
    except SystemExit as exit:
        raise BadCommand(errors.getvalue().strip() or f"exit {exit.code}") from None
    except ValueError as error:
        raise BadCommand(str(error)) from None


def check_script(script: str, arguments: list[str], monkeypatch) -> None:
    """A benchmark or docs script, run as `__main__` until its `parse_args` returns."""
    path = ROOT / script
    if not path.is_file():
        raise BadCommand(f"{script} does not exist")
    source = path.read_text()
    if "argparse" not in source and "run_from_command_line" not in source:
        raise BadCommand(f"{script} has no argument parser: running it would run it")
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    errors = io.StringIO()
    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        patch.setattr(sys, "argv", [str(path), *arguments])
        patch.syspath_prepend(str(path.parent))
        try:
            with contextlib.redirect_stderr(errors):
                runpy.run_path(str(path), run_name="__main__")
        except Parsed:
            return
        except SystemExit as exit:
            raise BadCommand(errors.getvalue().strip() or f"exit {exit.code}") from None
        finally:  # the script's sibling modules (benchmarks/common.py, ...) leave with it
            for name, module in list(sys.modules.items()):
                if getattr(module, "__file__", None) and Path(module.__file__).parent == path.parent:
                    del sys.modules[name]
    raise BadCommand(f"{script} returned without parsing its arguments")


def check_command(command: list[str], monkeypatch) -> None:
    if command[0] == "hf-evolution":
        check_hf_evolution(command[1:])
    elif command[1] in EXAMPLES:
        check_example(command[1], command[2:])
    else:
        check_script(command[1], command[2:], monkeypatch)


COMMANDS = quoted_commands()


def test_the_documents_quote_enough_commands_to_check():
    assert len(COMMANDS) >= MIN_COMMANDS, [where for where, _ in COMMANDS]
    programs = {command[0] if command[0] == "hf-evolution" else command[1].split("/")[0] for _, command in COMMANDS}
    assert programs == {"hf-evolution", "examples", "benchmarks", "docs"}, programs


@pytest.mark.parametrize("command", [command for _, command in COMMANDS], ids=[where for where, _ in COMMANDS])
def test_every_quoted_command_parses(command, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # whatever a parser resolves against the working directory, nothing lands in the repo
    check_command(command, monkeypatch)


@pytest.mark.parametrize(
    "line",
    [
        "hf-evolution compare --no-such-flag",
        "hf-evolution compare --task nonsense",
        "hf-evolution compare --models lstmm",
        "hf-evolution probe memory --size huge",
        "OMP_NUM_THREADS=1 hf-evolution probe speed --models rnn,nope",
        "hf-evolution quantize ONLY_ONE_FOLDER",
        "python examples/run_clm.py --model_type lstm --output_dir runs/x --no_such_flag 1",
        "python examples/run_clm.py --model_type lstmm --output_dir runs/x",
        "python examples/run_classification.py --model_type mamba --output_dir runs/x",
        "torchrun --nproc_per_node 2 examples/run_clm.py --model_type lstm --output_dir runs/x --size huge",
        "python benchmarks/run_all.py --no-such-flag",
        "python docs/train_probe_lms.py --output runs/x --init nonsense",
        "python benchmarks/no_such_benchmark.py",
    ],
)
def test_a_command_with_a_wrong_flag_or_value_is_refused(line, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    command = as_command(shlex.split(line))
    assert command is not None, line
    with pytest.raises(BadCommand):
        check_command(command, monkeypatch)


def test_commands_are_read_as_a_shell_reads_them():
    text = (
        "```bash\n"
        "pip install -e . && hf-evolution compare   # the main job\n"
        'OMP_NUM_THREADS=1 python examples/run_clm.py --model_name_or_path "$(python -c "print(\'a (b)\')")" \\\n'
        "    --output_dir x\n"
        "accelerate launch --num_processes 2 examples/run_clm.py --bf16\n"
        "python -m pytest\n"
        "```\n"
    )
    assert commands_in(text) == [
        ["hf-evolution", "compare"],
        ["python", "examples/run_clm.py", "--model_name_or_path", "SUBSTITUTED", "--output_dir", "x"],
        ["python", "examples/run_clm.py", "--bf16"],
    ]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens, repeats -1..."""
    anchors, seen = set(), {}
    for line in FENCE.sub("", markdown).splitlines():
        if match := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line):
            slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def relative_links(markdown: str) -> list[str]:
    """Targets of the Markdown links and images outside code, web addresses left out."""
    prose = re.sub(r"`[^`]*`", "", FENCE.sub("", markdown))
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", prose)
    return [target for target in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_and_heading_that_exist(document):
    broken = []
    for target in relative_links(document.read_text()):
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in github_anchors(resolved.read_text()):
            broken.append(f"{target}: no heading with this anchor")
    assert not broken, broken


def test_the_readme_is_a_front_door_that_links_every_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in relative_links(readme)}
    pages = {path.resolve() for path in DOCUMENTS if path.name != "README.md"}
    assert pages <= linked, sorted(str(path.relative_to(ROOT)) for path in pages - linked)
