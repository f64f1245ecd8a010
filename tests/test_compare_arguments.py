"""`hf-evolution compare` against a hostile user: every argument that cannot work is refused in one line with exit
code 2 before any work, `--resume` refuses options that would change the run, Ctrl-C ends in one line, and a model
that diverges (NaN loss) is reported as diverged in strict JSON, in the tables and plots, and never wins a sweep.

Most tests never train (they stop at the checks, or replace the comparison itself); two train tiny models for a few
steps at a learning rate of 1e30, which makes the loss NaN after the first step."""

import csv
import json
import math
import time
from dataclasses import replace

import jsonschema
import pytest
from huggingface_hub import ModelCard

import hf_evolution.compare
import hf_evolution.probes.scaling
import hf_evolution.probes.speed
from hf_evolution.cli import build_parser, main
from hf_evolution.compare.experiment import chosen_trial
from hf_evolution.compare.report import results_schema, write_outputs
from hf_evolution.compare.settings import LEARNING_RATES, SWEEP_GRIDS
from hf_evolution.compare.statistics import ranking, summarize


def refused(argv: list[str], capsys) -> str:
    """The one line of stderr of a command refused with exit code 2 (by argparse or by the command's checks)."""
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse refuses the value itself
        code = exit.code
    error = capsys.readouterr().err
    assert code == 2, (argv, code, error)
    lines = error.strip().splitlines()
    assert len(lines) == 1, error
    return lines[0]


def strict_json(text: str):
    """JSON as every other reader parses it: NaN, Infinity and -Infinity are refused."""

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def validate(results: dict) -> None:
    jsonschema.Draft202012Validator(results_schema()).validate(results)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--learning-rate", "0"], "--learning-rate must be a positive, finite number, got 0.0."),
        (["--learning-rate", "-1e-3"], "--learning-rate must be a positive, finite number, got -0.001."),
        (["--learning-rate", "inf"], "argument --learning-rate: expected a finite number, got 'inf'"),
        (["--learning-rate", "-inf"], "argument --learning-rate: expected a finite number, got '-inf'"),
        (["--lr-sweep", "inf"], "--lr-sweep needs positive, finite learning rates, got 'inf'."),
        (["--lr-sweep", "1e-3,nan"], "--lr-sweep needs positive, finite learning rates, got '1e-3,nan'."),
        (["--lr-sweep", "0,1e-3"], "--lr-sweep needs positive, finite learning rates, got '0,1e-3'."),
        (["--lr-sweep", "-1e-3,1e-2"], "--lr-sweep needs positive, finite learning rates, got '-1e-3,1e-2'."),
        (["--budget-seconds", "nan"], "argument --budget-seconds: expected a finite number, got 'nan'"),
        (["--budget-seconds", "inf"], "argument --budget-seconds: expected a finite number, got 'inf'"),
        (["--budget-seconds", "0"], "--budget-seconds must be a positive, finite number, got 0.0."),
        (["--budget-tokens", "9" * 300], "--budget-tokens must be at most 1e+15, got 1.000e+300."),
    ],
)
def test_learning_rates_and_budgets_that_are_not_positive_and_finite_are_refused(option, message, tmp_path, capsys):
    line = refused(["compare", "--preset", "smoke", *option, "--output", str(tmp_path / "run")], capsys)
    assert line.startswith("hf-evolution compare: error: ") and message in line
    assert not (tmp_path / "run").exists(), "refused before the run folder is made"


def test_every_float_option_of_every_subcommand_refuses_nan_and_inf(capsys):
    for argv in (["probe", "memory", "--lr", "nan"], ["probe", "speed", "--max-step-seconds", "inf"]):
        assert "expected a finite number" in refused(argv, capsys)
    assert build_parser().parse_args(["probe", "memory", "--lr", "1e-3"]).lr == 1e-3


def test_a_seed_count_is_bounded_before_any_list_is_built(tmp_path, capsys):
    started = time.perf_counter()
    line = refused(["compare", "--seeds", "100000000", "--output", str(tmp_path / "run")], capsys)
    assert "--seeds takes a count from 1 to 1000" in line and "got 100000000" in line
    many = ",".join(map(str, range(1001)))
    assert "--seeds lists 1001 seeds; at most 1000" in refused(["compare", "--seeds", many], capsys)
    assert time.perf_counter() - started < 5, "nothing of the size of the count was built"
    assert "--seeds lists 3 more than once" in refused(["compare", "--seeds", "3,1,3"], capsys)
    assert "--seeds takes a count from 1 to 1000" in refused(["compare", "--seeds", "0"], capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--seed", "-1"], "--seed must be between 0 and 4294967295 (2**32 - 1), got -1."),
        (["--seed", "4294967296"], "--seed must be between 0 and 4294967295 (2**32 - 1), got 4294967296."),
        (["--seeds", "-5,3"], "--seeds must be between 0 and 4294967295 (2**32 - 1), got -5."),
        (["--seeds", "1,4294967296"], "--seeds must be between 0 and 4294967295 (2**32 - 1), got 4294967296."),
        (["--seed", "4294967295", "--seeds", "2"], "--seeds 2 from --seed 4294967295: the last seed must be"),
    ],
)
def test_seeds_out_of_range_are_refused_naming_their_flag_before_any_work(option, message, tmp_path, capsys):
    line = refused(["compare", "--preset", "smoke", *option, "--output", str(tmp_path / "run")], capsys)
    assert line.startswith(f"hf-evolution compare: error: {message}")
    assert not (tmp_path / "run").exists(), "refused before the tokenizer is trained, before the folder is made"


@pytest.mark.parametrize("probe", ["gradients", "memory", "speed", "context"])
def test_a_probe_refuses_a_seed_out_of_range_at_parsing(probe, capsys):
    for seed in ("-1", "4294967296"):
        line = refused(["probe", probe, "--seed", seed], capsys)
        assert f"argument --seed: a seed must be between 0 and 4294967295 (2**32 - 1), got {seed}" in line
    assert build_parser().parse_args(["probe", probe, "--seed", "4294967295"]).seed == 4294967295


def test_values_that_look_like_negative_numbers_reach_their_own_checks():
    parser = build_parser()
    args = parser.parse_args(["compare", "--seeds", "-5,3", "--learning-rate", "-1e-3", "--lr-sweep", "-1e-3,1e-2"])
    assert (args.seeds, args.learning_rate, args.lr_sweep) == ([-5, 3], -1e-3, "-1e-3,1e-2")
    assert parser.parse_args(["compare", "--lr-sweep", "-.5"]).lr_sweep == "-.5"
    assert parser.parse_args(["probe", "memory", "--lr", "-1e-3"]).lr == -1e-3
    assert parser.parse_args(["compare", "--lr-sweep", "--seeds", "2"]).lr_sweep == "default", "options stay options"


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        (["--task", "lm", "--pooling", "mean"], "--pooling"),
        (["--task", "classify", "--models", "gpt2,bert", "--pooling", "max"], "--pooling"),
        (["--task", "classify", "--optimizer", "sgd"], "--optimizer"),
        (["--models", "gpt2,mingru", "--optimizer", "adamw"], "--optimizer"),
        (["--task", "classify", "--protocol", "stateful"], "--protocol"),
        (["--task", "lm", "--models", "gpt2", "--protocol", "common"], "--protocol"),
        (["--task", "classify", "--block-size", "32"], "--block-size"),
        (["--task", "lm", "--max-length", "64"], "--max-length"),
        (["--task", "lm", "--pretrained-bert", "minilm"], "--pretrained-bert"),
        (["--tokenizer", "someone/tokenizer", "--vocab-size", "500"], "--vocab-size"),
    ],
)
def test_options_that_would_change_nothing_are_refused(options, flag, tmp_path, capsys):
    line = refused(["compare", "--preset", "smoke", *options, "--output", str(tmp_path / "run")], capsys)
    assert line.startswith(f"hf-evolution compare: error: {flag} would change nothing in this run (")
    assert line.endswith("Leave it out.") and not (tmp_path / "run").exists()


class FakeComparison:
    """Stands in for the comparison itself (the training): records the settings a run was given, or is interrupted."""

    def __init__(self, interrupt: bool = False):
        self.settings, self.interrupt = [], interrupt

    def __call__(self, folder, settings, results):
        self.settings.append(settings)
        if self.interrupt:
            raise KeyboardInterrupt
        return 0


def test_resume_refuses_the_options_that_would_change_the_run_and_names_them(tmp_path, monkeypatch, capsys):
    comparison = FakeComparison()
    monkeypatch.setattr(hf_evolution.compare, "run_comparison", comparison)
    run = str(tmp_path / "run")
    assert main(["compare", "--task", "lm", "--models", "lstm", "--preset", "smoke", "--output", run]) == 0
    (first,) = comparison.settings

    line = refused(
        ["compare", "--resume", "--output", run, "--seeds", "3", "--models", "lstm", "--learning-rate", "1"], capsys
    )
    assert "and --learning-rate would change them" in line, "--models lstm is the run's, --seeds 3 adds seeds"
    assert "(it was started as: hf-evolution compare --task lm --models lstm --preset smoke)" in line
    assert len(comparison.settings) == 1, "refused before any work"
    assert "--models would change" in refused(["compare", "--resume", "--output", run, "--models", "gru"], capsys)
    assert "--pooling would change" in refused(["compare", "--resume", "--output", run, "--pooling", "max"], capsys)

    # Options that give the run's own settings are fine, in any spelling, and so is another device.
    same = ["--models", "lstm", "--task", "lm", "--preset", "smoke", "--seeds", "42,", "--seed", "42"]
    assert main(["compare", "--resume", "--output", run, *same, "--device", "cpu"]) == 0
    resumed = comparison.settings[-1]
    assert resumed == replace(first, device="cpu")
    assert strict_json((tmp_path / "run" / "results.json").read_text())["settings"]["device"] == "auto"

    # --seeds that keeps the run's seeds adds the others; one that drops or reorders them is refused.
    for seeds in ("0,1", "43,44", "43,42"):
        assert "--seeds would change" in refused(["compare", "--resume", "--output", run, "--seeds", seeds], capsys)
    assert main(["compare", "--resume", "--output", run, "--seeds", "3"]) == 0
    assert comparison.settings[-1].seeds == [42, 43, 44]
    stored = strict_json((tmp_path / "run" / "results.json").read_text())["settings"]
    assert stored["seeds"] == [42, 43, 44] and stored["options"]["seeds"] == 3
    assert main(["compare", "--resume", "--output", run]) == 0 and comparison.settings[-1].seeds == [42, 43, 44]

    # A results.json from before the options were stored cannot tell: any option is refused, none is fine.
    path = tmp_path / "run" / "results.json"
    results = json.loads(path.read_text())
    del results["settings"]["options"]
    path.write_text(json.dumps(results))
    assert "--task would change them" in refused(["compare", "--resume", "--output", run, "--task", "lm"], capsys)
    assert main(["compare", "--resume", "--output", run]) == 0


def test_ctrl_c_ends_in_one_line_that_says_how_to_resume_and_exit_code_130(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hf_evolution.compare, "run_comparison", FakeComparison(interrupt=True))
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--preset", "smoke", "--models", "gru"]) == 130
    (line,) = capsys.readouterr().err.strip().splitlines()
    prefix = "hf-evolution compare: interrupted; what finished is kept: `hf-evolution compare --resume --output "
    assert line.startswith(prefix) and line.endswith("` continues it.")
    folder = tmp_path / line.removeprefix(prefix).removesuffix("` continues it.")
    assert (
        folder.parent.name == "runs"
        and "gru" in strict_json((folder / "results.json").read_text())["settings"]["models"]["lm"]
    )
    monkeypatch.setattr(hf_evolution.compare, "run_comparison", FakeComparison())
    assert main(["compare", "--resume", "--output", str(folder.relative_to(tmp_path))]) == 0, (
        "the line's command works"
    )

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(hf_evolution.probes.speed, "run", interrupted)
    assert main(["probe", "speed", "--output", str(tmp_path / "probe")]) == 130
    assert capsys.readouterr().err == "hf-evolution probe: interrupted.\n", "probe speed has no --resume to offer"
    monkeypatch.setattr(hf_evolution.probes.scaling, "run", interrupted)
    assert main(["probe", "scaling", "--preset", "smoke", "--output", "scaling"]) == 130
    hint = "`hf-evolution probe scaling --resume --output scaling` continues it."
    assert capsys.readouterr().err.strip().endswith(hint), "the hint names the probe"


def test_a_model_that_diverged_with_one_seed_has_no_mean_and_no_rank():
    def row(model, seed, value, diverged=False):
        return {
            "task": "lm",
            "model": model,
            "seed": seed,
            "params_total": 100,
            "test_perplexity": value,
            "generation_tokens_per_second": 10.0 + seed,
            "diverged": diverged,
        }

    runs = [row("gru", seed, 20.0 + seed) for seed in (1, 2, 3)]
    runs += [row("lstm", 1, 30.0), row("lstm", 2, None, diverged=True), row("lstm", 3, 31.0)]
    gru, lstm = summarize(runs)
    assert gru["diverged_seeds"] == [] and gru["test_perplexity"] == 22.0 and gru["test_perplexity_ci95"]
    assert lstm["diverged_seeds"] == [2] and lstm["n_seeds"] == 3
    assert lstm["test_perplexity"] is lstm["test_perplexity_std"] is lstm["test_perplexity_ci95"] is None
    assert lstm["generation_tokens_per_second"] == 12.0 and lstm["params_total"] == 100
    entries = ranking([lstm, gru], "test_perplexity", lower_is_better=True)
    assert [(entry["model"], entry["best_rank"], entry["diverged"]) for entry in entries] == [
        ("gru", 1, False),
        ("lstm", None, True),
    ]


def test_a_diverged_trial_never_wins_a_sweep():
    trials = [
        {"learning_rate": 1.0, "val_loss": math.nan},
        {"learning_rate": 2.0, "val_loss": None, "diverged": True},
        {"learning_rate": 3.0, "val_loss": 0.5, "diverged": True},  # a finite figure of a diverged model
        {"learning_rate": 4.0, "val_loss": 2.0, "diverged": False},
        {"learning_rate": 5.0, "val_loss": math.inf},
    ]
    assert chosen_trial(trials, "val_loss")["learning_rate"] == 4.0
    assert chosen_trial(trials[:3], "val_loss") is None


def test_a_diverged_model_is_reported_as_diverged_in_strict_json_tables_and_plots(tmp_path, monkeypatch):
    monkeypatch.setitem(LEARNING_RATES["lm"], "gpt2", 1e30)  # the loss is NaN from the second step on
    output = tmp_path / "run"
    command = ["compare", "--preset", "smoke", "--task", "lm", "--models", "rnn,gpt2", "--budget-tokens", "4096"]
    assert main([*command, "--output", str(output)]) == 0

    results = strict_json((output / "results.json").read_text())
    validate(results)
    rows = {row["model"]: row for row in results["runs"]}
    assert rows["gpt2"]["diverged"] and not rows["rnn"]["diverged"]
    assert rows["gpt2"]["val_loss"] is None and rows["gpt2"]["test_stream_perplexity"] is None
    assert rows["gpt2"]["curve"][-1]["val_loss"] is None and rows["gpt2"]["curve"][0]["val_loss"] > 0
    assert math.isfinite(rows["rnn"]["test_stream_perplexity"])
    summary = {row["model"]: row for row in results["summary"]}
    assert summary["gpt2"]["diverged_seeds"] == [42] and summary["gpt2"]["test_perplexity"] is None
    text = (output / "results.md").read_text()
    assert "| gpt2 | 2 x 32 | " in text and "| 1e+30 | diverged | diverged |" in text
    assert "- gpt2 diverged at lr 1e+30: its loss became NaN or too large for a float" in text
    assert "Order by test ppl (stream), best first: rnn (not tested" in text and "Diverged: gpt2." in text
    for plot in ("validation_loss", "quality_vs_parameters", "throughput"):
        assert (output / f"lm_{plot}.png").stat().st_size > 10_000
    with open(output / "results_per_seed.csv") as file:
        assert [(row["model"], row["diverged"], row["val_loss"]) for row in csv.DictReader(file)][1] == (
            "gpt2",
            "True",
            "",
        )
    card = ModelCard.load(output / rows["gpt2"]["checkpoint"] / "README.md")
    assert not card.data.eval_results, "the card claims no figure the model does not have"
    assert "**Training diverged**" in card.text and "| diverged |" in card.text
    assert "diverged" not in (output / rows["rnn"]["checkpoint"] / "README.md").read_text()

    # Three seeds of the same rows: intervals and ranks, with the diverged model unranked at the end.
    results["runs"] = [{**row, "seed": seed} for row in results["runs"] for seed in (42, 43, 44)]
    results["settings"]["seeds"] = [42, 43, 44]
    write_outputs(tmp_path, results)
    text = (tmp_path / "results.md").read_text()
    assert "| 1 | rnn | " in text and "| - | gpt2 | diverged | - | - |" in text
    validate(strict_json((tmp_path / "results.json").read_text()))


def test_a_sweep_never_chooses_a_diverged_trial_and_records_a_model_whose_every_trial_diverged(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(SWEEP_GRIDS, "adamw", (1e30, 1e-3))  # gru: the diverged trial first, as min() saw it first
    monkeypatch.setitem(SWEEP_GRIDS, "lstm", (1e30,))  # lstm: every trial diverges
    output = tmp_path / "run"
    command = ["compare", "--preset", "smoke", "--task", "classify", "--models", "gru,lstm", "--lr-sweep"]
    assert main([*command, "--seeds", "2", "--budget-tokens", "4096", "--output", str(output)]) == 0
    assert (
        "[2/5] classify lstm seed 43: not trained: every learning rate of its sweep diverged"
        in capsys.readouterr().out
    )

    results = strict_json((output / "results.json").read_text())
    validate(results)
    sweeps = {entry["model"]: entry for entry in results["lr_sweep"]}
    assert [trial["diverged"] for trial in sweeps["gru"]["trials"]] == [True, False]
    assert sweeps["gru"]["chosen"] == 1e-3 and sweeps["lstm"]["chosen"] is None
    assert [(row["model"], row["seed"], row["learning_rate"]) for row in results["runs"]] == [
        ("gru", 42, 1e-3),
        ("gru", 43, 1e-3),
    ]
    text = (output / "results.md").read_text()
    assert "| lstm: not run, every learning rate of its sweep diverged |" in text
    assert "| lstm | n/a | diverged | none: all diverged |" in text, "lstm's grid has no 1e-3"
    assert "| gru | " in text and " | diverged | 0.001 |" in text

    assert main(["compare", "--resume", "--output", str(output)]) == 0, "nothing left to do, nothing redone"
    out = capsys.readouterr().out
    assert out.count("finished earlier, skipped") == 4 and "lstm seed 43: not trained" in out
    assert strict_json((output / "results.json").read_text())["runs"] == results["runs"]


def test_resume_with_more_seeds_trains_only_the_new_ones_and_reports_their_spread(tmp_path, capsys):
    run = str(tmp_path / "run")
    command = ["compare", "--preset", "smoke", "--task", "lm", "--models", "rnn", "--output", run]
    assert main(command) == 0
    first = json.loads((tmp_path / "run" / "results.json").read_text())
    assert main(["compare", "--resume", "--output", run, "--seeds", "2"]) == 0
    assert "Adding seeds 43 to the run." in capsys.readouterr().out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [row["seed"] for row in results["runs"]] == [42, 43]
    assert results["runs"][0] == first["runs"][0], "the finished seed is kept, not retrained"
    (summary,) = results["summary"]
    assert summary["n_seeds"] == 2 and summary["test_stream_perplexity_std"] is not None


def test_the_command_sets_passive_openmp_waiting_and_the_package_leaves_the_environment_alone(monkeypatch):
    """OpenMP reads its wait policy once, when torch loads: the command starts itself again with it set, unless the
    user set one; importing the package changes nothing in the process environment."""
    import os
    import subprocess
    import sys

    import hf_evolution.cli

    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    imported = subprocess.run(
        [sys.executable, "-c", "import os, hf_evolution; print(os.environ.get('OMP_WAIT_POLICY'))"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported.stdout.strip() == "None"

    started = []
    monkeypatch.setattr(hf_evolution.cli.os, "execv", lambda path, argv: started.append((path, argv)))
    monkeypatch.setattr(hf_evolution.cli, "main", lambda: 0)
    monkeypatch.setattr(sys, "argv", ["hf-evolution", "compare", "--preset", "smoke"])
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    hf_evolution.cli.console_main()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert started == [(sys.executable, [sys.executable, "-m", "hf_evolution.cli", "compare", "--preset", "smoke"])]
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert hf_evolution.cli.console_main() == 0 and len(started) == 1, "a policy the user set wins, no restart"
