"""The `labkit` command: `labkit eval`, `labkit demo`, `labkit prune`, ... (`labkit -h` lists them).

Bad input ends in one line `labkit: error: ...` and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from fractions import Fraction

from .errors import LabError


def scale_arg(text: str) -> float:
    """--scale: 1 (raw pixels 0..255) or 1/255 (pixels scaled to 0..1)."""
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r}: use 1 (raw pixels) or 1/255") from None


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", type=scale_arg, default=None,
                   help="input scaling: 1 = raw pixels 0..255 (the lab's BadNet), 1/255 = pixels "
                        "/ 255 (the CSAW-HackML-2020 BadNets); default: known models get theirs")
    p.add_argument("--trust", action="store_true",
                   help="load models with layers outside the lab's architecture (may run code "
                        "from the file: only for files you trust)")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="clean accuracy and attack success rate of a model",
                       description="Print the two lines of the course's evaluation script.")
    p.add_argument("clean", metavar="CLEAN_H5", help="clean data, e.g. data/cl/valid.h5")
    p.add_argument("poisoned", metavar="POISONED_H5", help="poisoned data, e.g. data/bd/bd_valid.h5")
    p.add_argument("model", metavar="MODEL", help="full .h5 model, weights-only .h5 or .keras")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_model_options(p)
    p.set_defaults(run=_eval)


def _eval(args) -> int:
    from .data import Split
    from .metrics import evaluate, report_lines
    from .models import load_model

    net = load_model(args.model, scale=args.scale, trust=args.trust)
    clean = Split(args.clean, description="clean data file given", hint="check the path")
    poisoned = Split(args.poisoned, poisoned=True, description="poisoned data file given",
                     hint="check the path")
    result = evaluate(net, clean, poisoned, progress=not args.json)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(report_lines(result)))
    if "warning" in result:
        print(f"labkit: warning: {result['warning']}", file=sys.stderr)
    return 0


COMMANDS = [_add_eval]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="labkit", description="The backdoor-defense lab: "
                                "evaluate a BadNet, prune it, build a GoodNet.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return p


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up lines (CUDA probes) kept off the terminal.

    They are written to stderr before any logging setting applies, and would bury the
    one-line errors and the two result lines of the command line.
    """
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    sys.stderr.flush()
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import_tensorflow_quietly()
    try:
        return args.run(args)
    except LabError as err:
        print(f"labkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labkit: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
