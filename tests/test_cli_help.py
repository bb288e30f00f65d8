"""Every command's --help is complete: each option that takes a value says its default (or that it is
required), and cyclegan-train's config flags come from the config tree (tests/test_config.py). What a
command imports before it answers."""

import argparse
import subprocess
import sys

import pytest

from cyclegan import demo, evaluate, export, generate
from cyclegan.bench import __main__ as bench
from cyclegan.data import shard


def _parsers(parser: argparse.ArgumentParser, name: str):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from _parsers(subparser, f"{name} {sub}")


PARSERS = [
    (f"{name}", parser)
    for prog, build in [("cyclegan-shard", shard.build_parser), ("cyclegan-generate", generate.build_parser),
                        ("cyclegan-eval", evaluate.build_parser), ("cyclegan-demo", demo.build_parser),
                        ("cyclegan-bench", bench.build_parser), ("cyclegan-export", export.build_parser)]
    for name, parser in _parsers(build(), prog)
]  # fmt: skip


@pytest.mark.parametrize("name,parser", PARSERS, ids=[name for name, _ in PARSERS])
def test_every_option_documents_its_default(name, parser):
    formatter = parser.formatter_class(prog=name)
    for action in parser._actions:
        if action.nargs == 0 or isinstance(action, argparse._SubParsersAction) or action.dest == "help":
            continue  # flags (off unless given), subcommands, --help
        assert action.help, f"{name} {action.option_strings}: no help"
        shown = formatter._expand_help(action)  # with what ArgumentDefaultsHelpFormatter appends
        assert action.required or "default" in shown, f"{name} {action.option_strings}: help names no default"
        assert "default: None" not in shown, f"{name} {action.option_strings}: say what happens without it"


@pytest.mark.slow
def test_help_needs_no_torch_and_training_no_optional_packages():
    """In a fresh interpreter: ``cyclegan-train --help`` and ``cyclegan-shard --help`` answer without
    importing torch (start-up time: README); the trainer and the benchmarks then import without
    webdataset, W&B, DALI and transformers (only train.eval_segmenter needs it), which GPU hosts may lack."""
    code = (
        "import contextlib, io, sys\n"
        "from cyclegan import train\n"
        "from cyclegan.data import shard\n"
        "for main in (train.main, shard.main):\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "        main(['--help'])\n"
        "    assert 'usage:' in out.getvalue()\n"
        "print('torch' in sys.modules)\n"
        "import cyclegan.bench.__main__, cyclegan.trainer\n"
        "print(sorted(m for m in ('webdataset', 'wandb', 'nvidia.dali', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "[]"]

