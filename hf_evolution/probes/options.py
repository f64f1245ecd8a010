"""Command-line options every probe shares; each probe adds its own budget options in its module."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..families import MODEL_FAMILIES, MODEL_GROUPS, SIZES
from ..runs import check_seed


def seed(text: str) -> int:
    """`--seed`, refused at parsing (before any model is built) outside the range every seeding function takes."""
    value = int(text)  # argparse words a ValueError here as "invalid seed value"
    try:
        return check_seed(value, "a seed")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).rstrip(".")) from None


def preset_help(presets: dict, key: str, text: str) -> str:
    default, smoke = getattr(presets["default"], key), getattr(presets["smoke"], key)
    return f"{text} (default: {default}; --preset smoke: {smoke})"


def add_common_options(parser: argparse.ArgumentParser, probe: str, presets: dict, default_families: str) -> None:
    models = parser.add_argument_group("models")
    models.add_argument(
        "--models",
        metavar="FAMILIES",
        help=f"comma-separated families to build with fresh weights at --size, parameter-matched: any of "
        f"{','.join(MODEL_FAMILIES)}, or the groups {', '.join(MODEL_GROUPS)} (default: {default_families})",
    )
    models.add_argument(
        "--model",
        type=Path,
        action="append",
        metavar="FOLDER",
        help="a checkpoint folder: one of ours or any causal LM saved with save_pretrained; repeatable",
    )
    models.add_argument("--size", choices=list(SIZES), help=preset_help(presets, "size", "size of the fresh models"))
    run = parser.add_argument_group("run")
    run.add_argument(
        "--preset",
        choices=tuple(presets),
        default="default",
        help="budget: 'default' for measurements, 'smoke' to check a setup in seconds (default: default)",
    )
    run.add_argument("--output", type=Path, metavar="DIR", help=f"run folder (default: runs/probe-{probe}-<time>)")
    run.add_argument("--overwrite", action="store_true", help="replace a run folder that already holds results")
    run.add_argument("--seed", type=seed, default=0, help="seed of weights and data (default: 0)")
    run.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run (default: cuda if present)"
    )


def add_text_options(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("text")
    data.add_argument(
        "--dataset",
        default="bbc-news",
        help="corpus for load_corpus: bbc-news (embedded), a .txt/.csv/.json file or a Hub id (default: bbc-news)",
    )
    data.add_argument(
        "--tokenizer",
        metavar="FOLDER",
        help="tokenizer of the fresh models (default: a byte-level BPE trained on the train split); checkpoint "
        "folders always use their own",
    )
