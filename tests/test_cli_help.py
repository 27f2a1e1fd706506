"""The command line explains itself: `qualmet --help` lists every command under a heading, in the
order a user meets them, with the exit codes; every option of every command has help text."""
from __future__ import annotations

import argparse

from qualmet.cli import GROUPS, build_parser


def _subcommands(parser: argparse.ArgumentParser, prefix: str = ""):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                yield f"{prefix}{name}", sp
                yield from _subcommands(sp, f"{prefix}{name} ")


def test_every_command_is_listed_under_its_heading():
    text = build_parser().format_help()
    top = [n for n, _ in _subcommands(build_parser()) if " " not in n]
    grouped = [n for _, names in GROUPS for n in names]
    assert sorted(top) == sorted(grouped), "a command is missing from cli.GROUPS (or GROUPS names one that is gone)"
    at = [text.index(f"\n    {n} ") for n in grouped]
    assert at == sorted(at)  # in GROUPS order, the order a user meets them
    assert "exit codes: 0 done" in text and "other" not in text.split("commands:")[1].split("exit codes")[0]


def test_every_option_of_every_command_has_help_text():
    missing = [f"{name}: {a.option_strings or a.dest}" for name, sp in _subcommands(build_parser())
               for a in sp._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help]
    assert missing == []
