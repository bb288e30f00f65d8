"""What the argparse command lines (shard, generate, eval, bench, demo) share: value types, the help
formatter, and the one-line-error entry point.

A value outside a type's range is argparse's usage error (exit 2) naming the flag, like any other
malformed flag; ``cyclegan-train`` checks its fields in :mod:`cyclegan.config` instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Collection


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for counts of at least ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in "invalid int value: 'x'"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def float_in(low: float, below: float | None = None) -> Callable[[str], float]:
    """An argparse ``type`` for numbers in ``[low, below)`` (no upper end when ``below`` is None)."""
    wanted = f"in [{low:g}, {below:g})" if below is not None else f">= {low:g}"

    def parse(text: str) -> float:
        value = float(text)
        if not (value >= low and (below is None or value < below)):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


def subset_of(choices: Collection[str], what: str) -> Callable[[str], list[str]]:
    """An argparse ``type`` for a comma-separated, non-empty subset of ``choices`` (``what``: their noun)."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in choices]
        if unknown or not names:
            listed = ", ".join(unknown) or "(none)"
            raise argparse.ArgumentTypeError(f"unknown {what}(s) {listed}; use {','.join(choices)}")
        return names

    parse.__name__ = "list"
    return parse


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written (module docstrings with examples), and each option's default appended,
    except where it has none (None or ""): there its help says what happens without it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default == "":
            return action.help
        return super()._get_help_string(action)


def run_reporting_errors(prog: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace,
                         errors: tuple[type[Exception], ...]) -> int:  # fmt: skip
    """``run(args)``; one of ``errors`` (a user's input that cannot be used) becomes the single line
    ``<prog>: error: <what>`` on stderr and exit code 2, as argparse's own errors do."""
    try:
        return run(args)
    except errors as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
