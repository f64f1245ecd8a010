"""`hf-evolution`: the command line. Each subcommand lives in its own module and registers its arguments here."""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import sys

from .runs import USER_ERRORS, one_line


def finite_float(text: str) -> float:
    """A float option's value: nan and inf are no setting (leave the option out for none)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


class Parser(argparse.ArgumentParser):
    """argparse, with changes that every subcommand gets (subparsers are of the class of their parent):

    - a value that looks like a negative number or list (`-5,3`, `-1e-3`, `-inf`) is a value, not an unknown option,
      so that the option's own check says what is wrong with it instead of "expected one argument";
    - every `type=float` option refuses nan and inf, which no option means;
    - an error is one line, as the commands' own refusals are (the usage of `compare` alone is twenty lines)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\.?\d|inf|nan)", re.IGNORECASE)
        self.register("type", float, finite_float)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import compare, probes
    from .deploy import conversion, onnx_export, quantization

    parser = Parser(
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
    try:
        args = build_parser().parse_args(argv)  # imports torch and transformers: seconds a Ctrl-C may land in
    except KeyboardInterrupt:
        print("hf-evolution: interrupted.", file=sys.stderr)
        return 130
    try:
        return args.run(args) or 0
    except USER_ERRORS as error:
        # What a user got wrong: a one-line message that says what to change, not a traceback.
        print(f"hf-evolution {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hf-evolution {args.command}: interrupted{resume_hint(args)}", file=sys.stderr)
        return 130  # 128 + SIGINT, as shells report a Ctrl-C


def console_main() -> int:
    """The `hf-evolution` command. OpenMP threads that spin while they wait make torch's CPU RNN kernels up to 27x
    slower as soon as another process holds a core (an LSTM training step: 4.2 s instead of 0.16 s); passive waiting
    removes that, but OpenMP reads the policy once, when torch loads, and importing this package has loaded it. So the
    command starts itself again with the policy set, unless it is set already (a value given wins)."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, "-m", "hf_evolution.cli", *sys.argv[1:]])
    return main()


def resume_hint(args) -> str:
    """How to continue an interrupted command, for those that can (`--resume`) once their folder is known."""
    if not hasattr(args, "resume") or not getattr(args, "output", None):
        return "."
    subcommand = " ".join(filter(None, (args.command, getattr(args, "probe", None))))
    command = f"hf-evolution {subcommand} --resume --output {shlex.quote(str(args.output))}"
    return f"; what finished is kept: `{command}` continues it."


if __name__ == "__main__":
    sys.exit(main())
