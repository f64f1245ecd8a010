"""`hf-evolution compare` end to end on the smoke preset: files, finite figures, matched sizes, kill and resume."""

import argparse
import json
import math

import jsonschema
import pytest
from conftest import killed_at
from huggingface_hub import ModelCard

from hf_evolution.cli import main
from hf_evolution.compare.experiment import run_notes
from hf_evolution.compare.report import results_schema, write_outputs
from hf_evolution.compare.settings import (
    LEARNING_RATES,
    OPTIMIZERS,
    PROTOCOLS,
    SGD_LEARNING_RATES,
    add_arguments,
    run_settings,
    training_recipe,
)
from hf_evolution.compare.statistics import ranking, spread, summarize, t_quantile
from hf_evolution.configuration_recurrent import POOLING_MODES
from hf_evolution.families import FAMILIES, MODEL_FAMILIES, requested_models
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


def test_model_groups_expand_in_the_order_of_the_line():
    assert requested_models("all") == list(MODEL_FAMILIES)
    assert requested_models("mamba,classic,lstm") == ["rnn", "lstm", "gru", "gpt2", "bert", "mamba"]
    with pytest.raises(ValueError, match=r"choose from rnn, .* or a group \(classic, revival, all\)"):
        requested_models("revivals")


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


def test_every_saved_model_carries_its_measured_figures_as_model_index_metadata(smoke_run):
    """The Hub reads `model-index` from the card: huggingface_hub's own parser must find every figure of the row."""
    results = json.loads((smoke_run / "results.json").read_text())
    for row in results["runs"]:
        card = ModelCard.load(smoke_run / row["checkpoint"] / "README.md")
        found = {
            (result.dataset_split, result.metric_type, result.metric_config): result.metric_value
            for result in card.data.eval_results
        }
        assert {result.task_type for result in card.data.eval_results} == {
            "text-generation" if row["task"] == "lm" else "text-classification"
        }
        assert {result.dataset_name for result in card.data.eval_results} == {"bbc-news"}
        expected = {"loss": (None, "loss")}
        if row["task"] == "lm":
            expected |= {
                "perplexity": (None, "perplexity"),
                "stream_perplexity": ("whole stream", "perplexity"),
                "stream_bits_per_byte": ("whole stream", "bits_per_byte"),
            }
        else:
            expected |= {"accuracy": (None, "accuracy"), "f1_macro": ("macro", "f1")}
        for split, prefix in (("validation", "val"), ("test", "test")):
            for figure, (config, metric) in expected.items():
                assert found[(split, metric, config)] == pytest.approx(row[f"{prefix}_{figure}"], abs=1e-4), (
                    row["model"],
                    split,
                    figure,
                )


def test_every_language_model_is_also_scored_over_whole_splits_its_own_way(smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    for row in (row for row in results["runs"] if row["task"] == "lm"):
        recurrent = row["model"] != "gpt2"
        assert row["stream_protocol"].startswith("state carried" if recurrent else "sliding window of 64")
        for key in ("val_stream_perplexity", "test_stream_perplexity", "test_stream_bits_per_byte"):
            assert math.isfinite(row[key]) and row[key] > 0, (row["model"], key)
    text = (smoke_run / "results.md").read_text()
    assert "test ppl (blocks) | test ppl (stream)" in text and "gpt2: sliding window of 64, stride 32" in text


def test_every_language_model_row_carries_the_unigram_plateau_of_the_training_split(smoke_run):
    """The plateau is the entropy of the training blocks' token counts, the same for every model of the run."""
    from collections import Counter

    from hf_evolution.data import load_corpus, pack_for_lm
    from hf_evolution.tokenization import load_tokenizer

    results = json.loads((smoke_run / "results.json").read_text())
    rows = [row for row in results["runs"] if row["task"] == "lm"]
    corpus = load_corpus(results["settings"]["dataset"], seed=42, max_documents=60)
    blocks = pack_for_lm(corpus["train"], load_tokenizer(smoke_run / "tokenizer"), 64)
    counts = Counter(token for ids in blocks["input_ids"] for token in ids)
    total = sum(counts.values())
    entropy = -sum(count / total * math.log(count / total) for count in counts.values())
    assert (
        [row["train_unigram_loss"] for row in rows]
        == [pytest.approx(entropy, rel=1e-9)] * len(rows)
        == [pytest.approx(entropy, rel=1e-9)] * 4
    )


def test_the_default_preset_sizes_the_vocabulary_and_drops_dropout_for_every_family(tmp_path):
    from hf_evolution.compare.experiment import comparison_model
    from hf_evolution.compare.settings import PRESETS

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    settings = run_settings(parser.parse_args([]))
    assert settings.vocab_size == PRESETS["default"].bpe_vocab_size == 4096
    assert run_settings(parser.parse_args(["--vocab-size", "512"])).vocab_size == 512
    assert run_settings(parser.parse_args(["--tokenizer", "char"])).vocab_size is None  # the kind's own default
    smoke_settings = run_settings(parser.parse_args(["--preset", "smoke"]))
    corpus = {"train": type("Split", (), {"features": {"label": type("L", (), {"names": ["a", "b"]})()}})()}
    for task, families in (("lm", ("rnn", "lstm", "gru", "gpt2", "mingru", "mamba")), ("classify", ("bert",))):
        for family in families:
            fields = FAMILIES[family].dropout_fields
            model = comparison_model(task, family, 300, corpus, settings, seed=0)
            assert all(getattr(model.config, field) == 0.0 for field in fields), family
            smoke = comparison_model(task, family, 300, corpus, smoke_settings, seed=0)
            assert all(getattr(smoke.config, field) > 0 for field in fields), family


def test_each_family_trains_its_own_best_way_by_default(smoke_run):
    runs = json.loads((smoke_run / "results.json").read_text())["runs"]
    rows = {row["model"]: row for row in runs if row["task"] == "lm"}
    for family, row in rows.items():
        recipe = (row["training"], row["optimizer"], row["learning_rate"])
        assert recipe == ("blocks", "adamw", FAMILIES[family].learning_rates["lm"]), family


def test_the_stateful_protocol_with_sgd_trains_the_classic_way(tmp_path):
    output = tmp_path / "run"
    command = ["compare", "--preset", "smoke", "--task", "lm", "--models", "lstm", "--protocol", "stateful"]
    assert main([*command, "--optimizer", "sgd", "--output", str(output)]) == 0
    rows = {row["model"]: row for row in json.loads((output / "results.json").read_text())["runs"]}
    assert rows["lstm"]["training"] == "stateful"
    assert (rows["lstm"]["optimizer"], rows["lstm"]["learning_rate"]) == ("sgd", SGD_LEARNING_RATES["lstm"])
    assert math.isfinite(rows["lstm"]["test_stream_perplexity"])


@pytest.mark.parametrize(
    ("task", "family", "protocol", "optimizer", "learning_rate", "expected"),
    [
        ("lm", "gru", "best", None, None, ("adamw", 1e-2, 0.01, False)),
        ("lm", "gru", "stateful", "sgd", None, ("sgd", SGD_LEARNING_RATES["gru"], 0.0, True)),
        ("lm", "lstm", "stateful", None, None, ("adamw", LEARNING_RATES["lm"]["lstm"], 0.01, True)),
        ("lm", "gpt2", "stateful", None, None, ("adamw", LEARNING_RATES["lm"]["gpt2"], 0.01, False)),
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
    assert "One seed (42): the spread between seeds is not measured" in text
    assert "Order by test ppl (stream), best first: " in text and "(not tested: an interval needs 3 seeds" in text
    header = next(line for line in text.splitlines() if line.startswith("| model"))
    assert "non-emb. params" in header and "test ppl" in header


def test_results_json_follows_its_shipped_schema(smoke_run):
    schema = results_schema()
    choices = schema["$defs"]["settings"]["properties"]
    assert choices["protocol"]["enum"] == list(PROTOCOLS) and choices["pooling"]["enum"] == list(POOLING_MODES)
    assert schema["$defs"]["model"]["enum"] == [*MODEL_FAMILIES, "bert-pretrained"], "the schema follows the code"
    assert schema["$defs"]["run"]["properties"]["optimizer"]["enum"] == list(OPTIMIZERS)
    jsonschema.Draft202012Validator(schema).validate(json.loads((smoke_run / "results.json").read_text()))


def test_three_seeds_bring_intervals_and_tested_ranks(smoke_run, tmp_path):
    """The report of a 3-seed run, from the smoke run's rows copied to two more seeds with figures 2% apart."""
    results = json.loads((smoke_run / "results.json").read_text())
    runs = []
    for row in results["runs"]:
        for seed, factor in ((42, 1.0), (43, 1.02), (44, 0.98)):
            runs.append(
                {**row, "seed": seed, "test_perplexity": row["test_perplexity"] * factor}
                if row["task"] == "lm"
                else {**row, "seed": seed}
            )
    results["runs"], results["settings"]["seeds"] = runs, [42, 43, 44]
    write_outputs(tmp_path, results)
    text = (tmp_path / "results.md").read_text()
    assert "Seeds 42, 43, 44" in text and text.count("95% intervals of the means over the seeds") == 2
    assert "Ranks by test ppl (blocks), lower is better:" in text and "Ranks by test acc, higher is better:" in text
    lm = [row for row in results["summary"] if row["task"] == "lm"]
    half = t_quantile(2) * 0.02 / math.sqrt(3)
    for row in lm:
        assert row["test_perplexity_ci95"] == pytest.approx(
            [row["test_perplexity"] * (1 - half), row["test_perplexity"] * (1 + half)]
        )
    for entry in ranking(lm, "test_perplexity", lower_is_better=True):
        rank = f"{entry['best_rank']}–{entry['worst_rank']}" if entry["tied"] else str(entry["best_rank"])
        assert f"| {rank} | {entry['model']} | " in text
    classify = ranking([row for row in results["summary"] if row["task"] == "classify"], "test_accuracy", False)
    for entry in classify:  # identical seeds: zero-width intervals, so only equal means tie
        assert entry["best_rank"] == 1 + sum(other["mean"] > entry["mean"] for other in classify)
    jsonschema.Draft202012Validator(results_schema()).validate(results)


def summary_row(model: str, mean: float, half_width: float | None) -> dict:
    interval = [mean - half_width, mean + half_width] if half_width is not None else None
    return {"model": model, "test_perplexity": mean, "test_perplexity_ci95": interval}


def test_models_whose_intervals_overlap_share_a_range_of_ranks():
    rows = [summary_row("rnn", 300, 10), summary_row("lstm", 215, 10), summary_row("gru", 200, 10)]
    rows.append(summary_row("gpt2", 240, 12))
    ranks = {entry["model"]: entry for entry in ranking(rows, "test_perplexity", lower_is_better=True)}
    ranges = {name: (entry["best_rank"], entry["worst_rank"], entry["tied"]) for name, entry in ranks.items()}
    assert ranges == {"gru": (1, 2, True), "lstm": (1, 2, True), "gpt2": (3, 3, False), "rnn": (4, 4, False)}
    assert ranks["gru"]["better_than"] == ["gpt2", "rnn"] and ranks["lstm"]["better_than"] == ["gpt2", "rnn"]
    wide = ranking([*rows, summary_row("noisy", 250, 200)], "test_perplexity", lower_is_better=True)
    assert [(entry["model"], entry["best_rank"], entry["worst_rank"]) for entry in wide][-2:] == [
        ("noisy", 1, 5),
        ("rnn", 4, 5),
    ], "an interval that overlaps every other leaves every rank open"
    accuracy = ranking(
        [{"model": "a", "acc": 0.9, "acc_ci95": [0.85, 0.95]}, {"model": "b", "acc": 0.5, "acc_ci95": [0.4, 0.6]}],
        "acc",
        lower_is_better=False,
    )
    assert [(entry["model"], entry["best_rank"], entry["tied"]) for entry in accuracy] == [
        ("a", 1, False),
        ("b", 2, False),
    ]
    untested = ranking([summary_row("rnn", 300, None), summary_row("gru", 200, None)], "test_perplexity", True)
    assert [(entry["model"], entry["best_rank"]) for entry in untested] == [("gru", None), ("rnn", None)]


def test_intervals_stay_within_the_values_a_figure_can_take():
    rows = [
        {"task": "lm", "model": "gru", "seed": seed, "test_perplexity": value, "test_accuracy": accuracy}
        for seed, value, accuracy in ((1, 2.0, 0.99), (2, 900.0, 0.2), (3, 20.0, 0.98))
    ]
    (summary,) = summarize(rows)
    assert summary["test_perplexity_ci95"][0] == 1.0 and summary["test_accuracy_ci95"][1] == 1.0
    assert spread([2.0, 900.0, 20.0])["ci95"][0] < 0, "the raw t interval reaches below zero"


def test_spread_gives_the_t_interval_from_three_seeds():
    figures = spread([1.0, 2.0, 3.0])
    assert figures["mean"] == 2.0 and figures["std"] == 1.0
    t_975_2 = 4.302652729911275  # Student's t, 0.975 quantile, 2 degrees of freedom
    assert t_quantile(2) == pytest.approx(t_975_2, rel=1e-9)  # exact: 0.95 / sqrt(2 * 0.975 * 0.025)
    assert figures["ci95"] == pytest.approx([2.0 - t_975_2 / math.sqrt(3), 2.0 + t_975_2 / math.sqrt(3)])
    assert spread([5.0]) == {"mean": 5.0, "std": None, "ci95": None}
    assert t_quantile(40) == pytest.approx(2.0211, abs=5e-4) and t_quantile(200) == pytest.approx(1.9719, abs=5e-4)


def test_lr_sweep_chooses_on_validation_and_resumes_inside_the_sweep(tmp_path, capsys):
    output = tmp_path / "run"
    command = ["compare", "--preset", "smoke", "--task", "classify", "--models", "gru", "--pooling", "max"]
    command += ["--lr-sweep", "1e-3,1e-2", "--seeds", "2", "--output", str(output)]
    killed_at("between-models", 1, *command)
    first = json.loads((output / "results.json").read_text())
    assert [row["learning_rate"] for row in first["lr_sweep"][0]["trials"]] == [1e-3] and not first["runs"]
    assert main(["compare", "--resume", "--output", str(output)]) == 0
    assert "[1/3] classify gru seed 42 lr 0.001: finished earlier, skipped" in capsys.readouterr().out

    results = json.loads((output / "results.json").read_text())
    (sweep,) = results["lr_sweep"]
    assert sweep["trials"][0] == first["lr_sweep"][0]["trials"][0], "the finished trial is not redone"
    assert [row["learning_rate"] for row in sweep["trials"]] == [1e-3, 1e-2] and sweep["metric"] == "val_loss"
    best = min(sweep["trials"], key=lambda row: row["val_loss"])
    assert sweep["chosen"] == best["learning_rate"]
    assert results["runs"][0] == best, "the first seed's run is the chosen trial"
    chosen = best["learning_rate"]
    assert [(row["seed"], row["learning_rate"]) for row in results["runs"]] == [(42, chosen), (43, chosen)]
    for row in results["runs"]:
        assert row["pooling"] == "max"
        assert json.loads((output / row["checkpoint"] / "config.json").read_text())["classifier_pooling"] == "max"
    text = (output / "results.md").read_text()
    assert "Learning-rate sweep (--lr-sweep), seed 42, val_loss" in text and " | max | " in text
    assert "maximum of their states" in text


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
    for wrong, message in (
        (["--seeds", "0"], "--seeds takes a count from 1 to 1000"),
        (["--seeds", "1,1"], "--seeds lists 1 more than once"),
        (["--lr-sweep", "fast"], "--lr-sweep takes comma-separated learning rates"),
        (["--lr-sweep", "--learning-rate", "1e-3"], "leave out --learning-rate, or the sweep"),
    ):
        assert main(["compare", *wrong, "--output", str(tmp_path / "c")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    (busy.path / "results.json").write_text(json.dumps({"schema_version": 1, "settings": {}}))
    assert main(["compare", "--resume", "--output", str(busy.path)]) == 2
    assert "results.json of another version of hf-evolution" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", "--preset", "huge"])


def test_the_notes_say_only_what_the_run_did():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    lm_only = run_notes(run_settings(parser.parse_args(["--task", "lm"])))
    assert lm_only == ["BERT is a bidirectional encoder: it has no causal perplexity, so this run leaves it out."]
    both = run_notes(run_settings(parser.parse_args(["--pooling", "mean"])))
    assert "so it is compared on classification only" in both[0] and "classifier_pooling='mean'" in both[1]


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
