"""`hf-evolution compare`: RNN, LSTM, GRU, GPT-2 and BERT trained side by side on the same data, tokenizer and budget.

Each model gets the same training tokens (or seconds), the same shared tokenizer trained on the training split, and
a size with the same non-embedding parameter count. Results are written the moment each model finishes
(results.json, .csv, .md and PNG plots), each trained model is saved as a checkpoint with its model card, and
`--resume` continues an interrupted run (Ctrl-C, a kill) with the settings it was started with, without redoing
finished models. `--seeds N` trains every model once per seed and reports each figure's mean and spread, with ranks
only where the 95% intervals separate the models. A model whose loss becomes NaN is reported as diverged, unranked,
and never chosen by a learning-rate sweep.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from ..runs import default_run_dir, open_run_folder, write_json
from .experiment import load_results, new_results, run_comparison
from .report import OUTPUTS, PLOTS, SCHEMA_VERSION
from .settings import PRESETS, TASKS, RunSettings, add_arguments, command_line, resume_conflicts, run_settings

__all__ = ["PRESETS", "add_parser", "run"]


def add_parser(subcommands) -> None:
    parser = subcommands.add_parser(
        "compare",
        help="train RNN, LSTM, GRU, GPT-2 and BERT side by side and write a results table and plots",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    """Check every argument, then open the run folder (fresh, replaced, or resumed) and run the comparison."""
    if args.resume:
        if not args.output:
            raise ValueError("--resume needs --output, the folder of the run to continue.")
        folder = open_run_folder(args.output, resume=True, resume_needs="results.json")
        results = load_results(folder.path)
        if results.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"{folder.path / 'results.json'} is the results.json of another version of hf-evolution (schema "
                f"{results.get('schema_version', 1)}, this one resumes {SCHEMA_VERSION}); start a new run."
            )
        settings = RunSettings.from_json(results["settings"])
        conflicts, more_seeds = resume_conflicts(args, settings)
        if conflicts:
            started = settings.options
            raise ValueError(
                f"--resume continues the run in {folder.path} with the settings it was started with, and "
                f"{', '.join(conflicts)} would change them"
                + (f" (it was started as: {command_line(started)})" if started is not None else "")
                + ". Leave them out, or start a new run in another --output."
            )
        if more_seeds:  # a finished run grows: the models train with the new seeds only
            print(f"Adding seeds {', '.join(map(str, more_seeds[len(settings.seeds) :]))} to the run.")
            settings = replace(settings, seeds=more_seeds, options={**settings.options, "seeds": args.seeds})
            results["settings"] = settings.to_json()
            write_json(folder.path / "results.json", results)
        if args.device is not None:  # where this process trains, not what the run is
            settings = replace(settings, device=args.device)
        print(f"Resuming {folder.path}: {len(results['runs'])} model(s) finished, settings as first run.")
    else:
        settings = run_settings(args)
        folder = open_run_folder(
            args.output or default_run_dir("compare"),
            overwrite=args.overwrite,
            protected=[settings.dataset, settings.tokenizer, settings.pretrained_bert],
        )
        args.output = str(folder.path)  # for the message of an interrupted run: `--resume --output` this folder
        folder.claim(*OUTPUTS, "tokenizer", "models", *(f"{task}_{plot}" for task in TASKS for plot in PLOTS))
        results = new_results(settings)
        write_json(folder.path / "results.json", results)
    with folder.discarded_on_failure():
        return run_comparison(folder, settings, results)
