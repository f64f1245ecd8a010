"""`hf-evolution probe scaling`: the smoke preset end to end, resume after a kill, repeatable points, the power-law fit
and the crossings on synthetic curves, and the refusals."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import killed_at
from test_probes import text_file  # noqa: F401  (a fixture: a small corpus as a .txt file)

from hf_evolution import runs
from hf_evolution.cli import build_parser, main
from hf_evolution.probes import scaling
from hf_evolution.probes.common import apply_preset
from hf_evolution.probes.scaling_fits import crossings, fit_loss, fit_power_law, pair_crossing, t_interval


@pytest.fixture(scope="module")
def smoke_args(request):
    """Two lines (the 1-layer LSTM and GPT-2) at the smoke preset's 5 sizes and 2 seeds: 20 points in seconds, on
    test_probes' small corpus."""
    corpus = request.getfixturevalue("text_file")
    return [
        "probe",
        "scaling",
        "--preset",
        "smoke",
        "--dataset",
        str(corpus),
        "--models",
        "lstm,gpt2",
        "--lstm-depths",
        "1",
    ]


def read_results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def points_in(text: str) -> int:
    return sum(len(entry["points"]) for entry in json.loads(text)["models"].values())


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, smoke_args):
    """An uninterrupted run, and what each atomic write of it wrote (file name, and points in a results.json)."""
    out = tmp_path_factory.mktemp("smoke") / "run"
    writes, write_text = [], runs.write_text

    def counted(path, text):
        writes.append((Path(path).name, points_in(text) if Path(path).name == "results.json" else None))
        return write_text(path, text)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runs, "write_text", counted)
        assert main([*smoke_args, "--output", str(out)]) == 0
    return out, read_results(out), writes


def by_point(results: dict) -> dict:
    return {
        (name, point["size"], point["seed"]): point
        for name, entry in results["models"].items()
        for point in entry["points"]
    }


def test_the_smoke_preset_writes_every_point_a_fit_per_line_and_the_plots(smoke_run):
    out, results, _ = smoke_run
    points = by_point(results)
    assert len(points) == 2 * 5 * 2 and results["settings"]["budget"] == "fixed"
    assert set(results["models"]) == {"lstm-1", "gpt2"} and results["models"]["lstm-1"]["depth"] == 1
    for point in points.values():
        assert point["tokens"] == point["steps"] * 4 * 16 == 1024
        assert point["flops"] == 6 * point["parameters"]["non_embedding"] * point["tokens"]
        assert 0 < point["test_bits_per_byte"] < 20 and point["wall_seconds"] > 0
        assert point["context_buckets"][0]["context_from"] == 1 and point["learning_rate"] > 0
    counts = [p["parameters"]["non_embedding"] for (name, _, _), p in points.items() if name == "gpt2"]
    assert max(counts) >= 30 * min(counts)
    for fit in results["fits"].values():
        assert set(fit["per_seed"]) == {"0", "1"} and fit["mean_fit"]["form"] == "power"
        low, high = fit["alpha"]["ci95"]
        assert low <= fit["alpha"]["mean"] <= high and fit["alpha"]["seeds"] == 2
    (pair,) = results["crossings"]
    assert pair["lines"] == ["lstm-1", "gpt2"] and pair["text"].startswith("lstm-1 / gpt2: ")
    assert "Kaplan" in results["learning_rates"] and results["plots"] == list(scaling.PLOTS)
    for plot in scaling.PLOTS:
        assert (out / plot).read_bytes().startswith(b"\x89PNG")


def test_a_killed_run_resumes_to_the_results_of_an_uninterrupted_one(smoke_run, smoke_args, tmp_path, monkeypatch):
    _, uninterrupted, writes = smoke_run
    out = tmp_path / "run"
    # Killed in the middle of writing results.json with its third point: the file on disk holds the first two.
    moment = 1 + writes.index(("results.json", 3))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    killed_at("inside-write", moment, *smoke_args, "--output", str(out))
    assert points_in((out / "results.json").read_text()) == 2 and list(out.glob(".results.json.tmp-*"))

    assert main(["probe", "scaling", "--resume", "--output", str(out)]) == 0
    resumed = read_results(out)
    assert resumed["resumed"] and "stopped" not in resumed
    expected, got = by_point(uninterrupted), by_point(resumed)
    assert got.keys() == expected.keys()
    for key, point in expected.items():
        assert got[key]["test_loss"] == pytest.approx(point["test_loss"], abs=1e-6), key
    for name, fit in uninterrupted["fits"].items():
        assert resumed["fits"][name]["alpha"]["mean"] == pytest.approx(fit["alpha"]["mean"], abs=1e-6)


def test_a_point_rerun_with_its_seed_repeats_its_loss(smoke_run, smoke_args):
    out, results, _ = smoke_run
    args = build_parser().parse_args([*smoke_args, "--output", str(out)])
    apply_preset(args, scaling.PRESETS)
    lines, _, _ = scaling.check_settings(args)
    data = scaling.scaling_data(args, runs.open_run_folder(out, resume=True))  # the run's own tokenizer
    for line in lines:
        again = scaling.measure_point(line, "16x1", 1, data, args, torch.device("cpu"))
        assert again["test_loss"] == pytest.approx(by_point(results)[line.name, "16x1", 1]["test_loss"], abs=1e-6)


def test_the_guard_stops_before_a_point_and_resume_finishes_the_run(smoke_args, tmp_path, capsys):
    out, args = tmp_path / "run", [*smoke_args[:-4], "--models", "gpt2", "--output", str(tmp_path / "run")]
    assert main([*args, "--max-minutes", "1e-9"]) == 0
    stopped = read_results(out)
    assert stopped["stopped"] == "--max-minutes 1e-09 reached; next: gpt2 8x1 seed 0" and not by_point(stopped)
    assert f"--resume --output {out} continues" in capsys.readouterr().err
    assert main(["probe", "scaling", "--resume", "--output", str(out), "--max-minutes", "5"]) == 0
    assert len(by_point(read_results(out))) == 10 and "stopped" not in read_results(out)


def test_the_fit_recovers_a_known_power_law():
    parameters = np.geomspace(1e4, 1e7, 8)
    noise = 1 + 0.002 * np.random.default_rng(0).standard_normal(len(parameters))
    fit = fit_power_law(parameters, ((5e4 / parameters) ** 0.3 + 1.2) * noise, "saturating")
    assert fit["alpha"] == pytest.approx(0.3, rel=0.05) and fit["l_inf"] == pytest.approx(1.2, abs=0.02)
    assert fit["n_c"] == pytest.approx(5e4, rel=0.2) and fit["rms_log_residual"] < 0.01
    plain = fit_power_law(parameters, (8.8e13 / parameters) ** 0.076)  # Kaplan's L(N), exactly
    assert plain["alpha"] == pytest.approx(0.076, rel=1e-6) and plain["n_c"] == pytest.approx(8.8e13, rel=1e-4)
    assert fit_loss(plain, 1e6) == pytest.approx((8.8e13 / 1e6) ** 0.076, rel=1e-6) and plain["l_inf"] == 0
    assert fit_power_law(parameters[:2], [3.0, 2.0]) is None  # two points fit any line
    assert fit_power_law(parameters[:3], [3.0, 2.5, 2.0], "saturating") is None


def power(alpha: float, loss_at_one: float) -> dict:
    return {"alpha": alpha, "amplitude": math.log(loss_at_one), "reference_n": 1.0, "l_inf": 0.0}


def test_crossings_of_synthetic_fits_and_their_interval_over_seeds():
    # ln L_a = 2 - 0.1 ln N and ln L_b = 2 + 0.2 ln(1e5) - 0.3 ln N meet at N = 1e5; b is lower above it.
    flat, steep = power(0.1, math.exp(2)), power(0.3, math.exp(2 + 0.2 * math.log(1e5)))
    assert crossings(flat, steep, 1e3, 1e7) == [pytest.approx(1e5, rel=1e-6)]
    assert crossings(flat, steep, 1e6, 1e7) == []
    seeds = {str(seed): power(0.3, math.exp(2 + 0.2 * math.log(at))) for seed, at in enumerate((8e4, 1.25e5))}
    fits = {
        "a": {"mean_fit": flat, "per_seed": {"0": flat, "1": flat}},
        "b": {"mean_fit": steep, "per_seed": seeds},
    }
    entry = pair_crossing("a", "b", fits, {"a": (1e3, 1e7), "b": (2e3, 1e7)})
    assert entry["crossings"] == [pytest.approx(1e5, rel=1e-6)] and entry["lower_above"] == "b"
    low, high = entry["ci95"]
    spread = t_interval([math.log(8e4), math.log(1.25e5)])
    assert (low, high) == pytest.approx([math.exp(bound) for bound in spread["ci95"]])
    assert low < 8e4 and high > 1.25e5 and entry["range"] == [2e3, 1e7]
    assert spread["ci95"][1] - spread["mean"] == pytest.approx(12.7062047 * spread["std"] / math.sqrt(2))
    apart = pair_crossing("a", "b", fits, {"a": (1e3, 5e4), "b": (1e3, 5e4)})
    assert apart["crossings"] == [] and apart["lower_throughout"] == "a"
    assert apart["text"] == "a / b: no crossing in the measured range (1,000.0 to 50,000.0); a is lower"


@pytest.mark.parametrize(
    "options, message",
    [
        (["--models", "nope"], "Unknown model(s) nope"),
        (["--models", "bert"], "BERT is a bidirectional encoder"),
        (["--seeds", "1"], "needs at least 2 seeds"),
        (["--sizes", "8x1,12x1,16x1,24x1,32x1"], "5 sizes spanning 30x in non-embedding parameters"),
        (["--sizes", "8x1,64x1"], "gives 2, from"),
        (["--sizes", "8x1,banana"], "--sizes takes WIDTHxLAYERS"),
        (["--sizes", "10x1x3"], "--sizes takes WIDTHxLAYERS"),
        (["--tokens", "0"], "--tokens must be positive"),
        (["--lstm-depths", "0"], "--lstm-depths takes positive whole numbers"),
        (["--size", "tiny"], "takes neither --model nor --size"),
        (["--resume"], "--resume needs --output DIR"),
    ],
)
def test_refusals_come_before_any_work(options, message, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["probe", "scaling", "--preset", "smoke", *options]
    assert main(argv if "--resume" in options else [*argv, "--output", str(out)]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1 and not out.exists()


def test_resume_keeps_the_run_settings(smoke_run, tmp_path, capsys):
    out, _, _ = smoke_run
    assert main(["probe", "scaling", "--resume", "--output", str(out), "--tokens", "2048"]) == 2
    assert "--tokens 2048 differs from its 1024" in capsys.readouterr().err
    assert main(["probe", "scaling", "--resume", "--output", str(tmp_path)]) == 2
    assert "Nothing to resume" in capsys.readouterr().err


def test_the_help_names_the_options_and_not_the_other_probes_sizes(capsys):
    with pytest.raises(SystemExit):
        main(["probe", "scaling", "--help"])
    text = capsys.readouterr().out
    for option in ("--sizes", "--budget", "--lstm-depths", "--seeds", "--resume", "--max-minutes", "--preset smoke"):
        assert option in text
    assert "--model FOLDER" not in text and "--size {" not in text
