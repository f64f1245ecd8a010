"""`hf-evolution`: the command line. Each subcommand lives in its own module and registers its arguments here."""

from __future__ import annotations

import argparse
import sys

from .runs import USER_ERRORS, one_line


def build_parser() -> argparse.ArgumentParser:
    from . import compare, probes
    from .deploy import conversion, onnx_export, quantization

    parser = argparse.ArgumentParser(
        prog="hf-evolution",
        description="Train, measure and deploy RNN, LSTM, GRU and their successors side by side.",
    )
    subcommands = parser.add_subparsers(dest="command", required=True)
    compare.add_parser(subcommands)
    probes.add_parser(subcommands)
    onnx_export.add_parser(subcommands)
    conversion.add_parser(subcommands)
    quantization.add_parser(subcommands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except USER_ERRORS as error:
        # What a user got wrong: a one-line message that says what to change, not a traceback.
        print(f"hf-evolution {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
