"""The CLI's help is the manual a user meets first: every command under a heading of
``qualmet --help``, every command and option with a help line, and the exit codes spelled out."""
from __future__ import annotations

import argparse

import pytest

from qualmet.cli import GROUPS, build_parser, main


def _subcommands(parser: argparse.ArgumentParser, prefix: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sp in action.choices.items():
                yield f"{prefix}{name}", sp
                yield from _subcommands(sp, f"{prefix}{name} ")


def test_qualmet_help_lists_every_command_under_its_heading(capsys):
    with pytest.raises(SystemExit) as ex:
        main(["--help"])
    assert ex.value.code == 0
    out = capsys.readouterr().out
    top = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)][0]
    grouped = [n for _, names in GROUPS for n in names]
    assert sorted(grouped) == sorted(top.choices), "a command is missing from cli.GROUPS (or listed twice)"
    assert "\n  other\n" not in out
    lines = out.splitlines()
    for title, names in GROUPS:
        start = lines.index(f"  {title}")
        for n in names:
            line = next(line for line in lines[start:] if line.strip().startswith(n + " "))
            assert len(line.split(None, 1)) == 2, f"{n} has no one-line help"
    assert "exit codes:" in out and "130 interrupted" in " ".join(out.split())


@pytest.mark.parametrize("name", [n for n, _ in _subcommands(build_parser())])
def test_every_option_of_every_command_has_help(name):
    sp = dict(_subcommands(build_parser()))[name]
    bare = [a.option_strings or a.dest for a in sp._actions
            if not a.help and not isinstance(a, argparse._HelpAction)]
    assert not bare, f"qualmet {name}: no help for {bare}"
