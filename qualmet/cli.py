"""The ``qualmet`` command line: a thin layer over documented Python functions.

Each module in ``qualmet/commands/`` adds its subcommands through ``register(subparsers)``; nothing
here needs editing to add a command. Errors print as one line naming the culprit, exit code 2 (also
for an output path that cannot be written).
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import textwrap
import warnings

from . import __version__, log
from .errors import PredictionsWarning, QualmetError


# ``qualmet --help`` lists the commands in the order a user meets them; a command missing here is
# listed under "other" (tests/test_cli_help.py keeps this table complete).
GROUPS = (("data", ("synth", "validate", "convert", "info", "show", "corrupt")),
          ("metrics", ("metrics", "errors", "importance")),
          ("review and selection", ("review", "select")),
          ("model", ("train", "predict", "crossval", "evaluate", "summary")),
          ("experiments", ("experiment", "demo")),
          ("report and export", ("report", "export")))
EXIT_CODES = ("exit codes: 0 done; 1 done, with problems it reports (a metric failed on some frames, a frame "
              "could not be read, validate found errors); 2 not done: a usage or data error, said in one line; "
              "130 interrupted (rerun the same command to resume)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qualmet", description="Data-centric quality metrics for object detection.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"qualmet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help=argparse.SUPPRESS)
    from . import commands

    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{commands.__name__}.{mod.name}").register(sub)
    _add_output_options(parser)
    parser.epilog = (_grouped_commands(sub) + "\n\n" + textwrap.fill(EXIT_CODES, 100, subsequent_indent="  ")
                     + "\n\n'qualmet COMMAND --help' describes each command.")
    return parser


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    """-q/--quiet, -v/--verbose and --no-progress on every command (the leaves of the parser tree),
    so each command accepts them after its name."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for child in {id(c): c for a in subs for c in a.choices.values()}.values():
        _add_output_options(child)
    if subs:
        return
    out = parser.add_argument_group("output")
    level = out.add_mutually_exclusive_group()
    level.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors (a command's table or JSON still prints)")
    level.add_argument("-v", "--verbose", action="store_true", help="also debug lines (cache use, training set-up) on stderr")
    if "--no-progress" not in parser._option_string_actions:
        out.add_argument("--no-progress", action="store_true",
                         help="no progress bars (they are also off when stderr is not a terminal)")


def _grouped_commands(sub: argparse._SubParsersAction) -> str:
    """The commands under their GROUPS headings, each with its one-line help."""
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    width = max(len(n) for n in helps) + 2
    listed = {n for _, names in GROUPS for n in names}
    groups = list(GROUPS) + ([("other", tuple(sorted(set(helps) - listed)))] if set(helps) - listed else [])
    lines = ["commands:"]
    for title, names in groups:
        lines.append(f"  {title}")
        lines += [f"    {n.ljust(width)}{helps[n]}" for n in names if n in helps]
    return "\n".join(lines)


def describe_os_error(exc: OSError) -> str:
    """One line naming the path: 'out is a file, not a folder (needed for out/chunks)' when a file
    stands where a folder must be, else 'PATH: reason'."""
    from pathlib import Path

    name = exc.filename2 or exc.filename  # a rename names the target second: the path the user gave
    if name is None:
        return f"{type(exc).__name__}: {exc}"
    p = Path(name)
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        # mkdir of p itself (FileExistsError) or of a path below a file: the first file on the way
        on_the_way = ([p] if isinstance(exc, FileExistsError) else []) + list(p.parents)
        blocker = next((q for q in on_the_way if q.is_file()), None)
        if blocker is not None:
            return f"{blocker} is a file, not a folder" + ("" if blocker == p else f" (needed for {p})")
    return f"{name}: {exc.strerror or exc}"


def _one_line_warnings(show):  # noqa: ANN001, ANN202
    """``warnings.showwarning`` that prints qualmet's own warnings (which name the file and item
    already) as one line, like its errors, and passes anything else to ``show``."""
    def one_line(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
        if issubclass(category, PredictionsWarning):
            print(f"qualmet: warning: {message}", file=file or sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)
    return one_line


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    log.configure(log.QUIET if args.quiet else log.VERBOSE if args.verbose else log.NORMAL)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            rc = args.func(args)
    except (QualmetError, PredictionsWarning) as exc:  # the warning is raised when warnings are errors (-W error)
        print(f"qualmet: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `qualmet metrics list | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0
    except OSError as exc:  # an output path that cannot be written (a file where a folder must go, no permission, disk full)
        print(f"qualmet: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qualmet: interrupted; finished work is kept, rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        log.unconfigure()  # main() called from Python leaves the library silent again
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
