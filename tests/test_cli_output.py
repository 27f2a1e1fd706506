"""What reaches the terminal: -q/--quiet, -v/--verbose and --no-progress on every command, bars only
on a terminal, and a library that prints nothing when called from Python."""
from __future__ import annotations

import argparse
import io
import logging

import pytest

from qualmet.cli import build_parser, main
from qualmet.runner import run_metrics
from qualmet.synth import generate


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "s"
    generate(out, 12, 2, seed=3, size=96, workers=1)
    return out


def _leaves(parser: argparse.ArgumentParser, prefix: str = ""):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix.strip(), parser
    for a in subs:
        for name, sp in a.choices.items():
            yield from _leaves(sp, f"{prefix}{name} ")


def test_every_command_takes_quiet_verbose_and_no_progress():
    for name, sp in _leaves(build_parser()):
        opts = set(sp._option_string_actions)
        assert {"-q", "--quiet", "-v", "--verbose", "--no-progress"} <= opts, f"qualmet {name}"


def test_quiet_hides_status_lines_not_the_commands_output(synth, tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "a"), "--train", "4", "--test", "1"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["synth", "--out", str(tmp_path / "b"), "--train", "4", "--test", "1", "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    assert main(["info", str(synth / "train.json"), "-q"]) == 0  # the JSON is what info is for
    assert '"images": 12' in capsys.readouterr().out


def test_quiet_keeps_warnings(synth, tmp_path, capsys):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(synth, data)
    first = sorted((data / "images").glob("train_*.jpg"))[0]
    first.unlink()
    rc = main(["show", str(data / "train.json"), "--out", str(tmp_path / "grid.png"), "--n", "12", "-q"])
    out, err = capsys.readouterr()
    assert rc == 1 and out == ""
    assert err.startswith("qualmet: warning: 1 of 12 frames could not be read") and first.name in err


def test_verbose_says_what_the_cache_did(synth, tmp_path, capsys):
    args = ["metrics", "run", str(synth / "train.json"), "--out", str(tmp_path / "run"), "--workers", "1", "-v"]
    assert main(args) == 0
    assert "debug: metric chunks: 0 of 1 read from the cache" in capsys.readouterr().err
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "debug: metric chunks: 1 of 1 read from the cache (1 files), 0 to compute" in err
    assert "debug:" not in out
    assert main(args[:-1]) == 0
    assert "debug:" not in capsys.readouterr().err


def test_bars_only_on_a_terminal_and_never_with_no_progress(synth, tmp_path, capsys, monkeypatch):
    args = ["metrics", "run", str(synth / "train.json"), "--workers", "1", "--metrics", "aspect_ratio,brightness"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert "\r" not in capsys.readouterr().err  # captured stderr is not a terminal: no bar
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    assert "metrics: 100%" in term.getvalue() and "12/12" in term.getvalue()
    term.seek(0), term.truncate()
    assert main(args + ["--out", str(tmp_path / "c"), "--no-progress"]) == 0
    assert term.getvalue() == ""


def test_the_library_prints_nothing_unless_asked(synth, tmp_path, capsys, caplog, monkeypatch):
    monkeypatch.setattr("sys.stderr", _Terminal())  # even on a terminal: bars are drawn only when asked
    run_metrics(synth / "train.json", out=tmp_path / "run", workers=1, metrics=["aspect_ratio"])
    generate(tmp_path / "g", 3, 1, seed=0, size=64, workers=1)
    assert capsys.readouterr() == ("", "")
    import sys

    assert sys.stderr.getvalue() == ""
    with caplog.at_level(logging.DEBUG, logger="qualmet"):  # a caller's logging config gets the records
        run_metrics(synth / "train.json", out=tmp_path / "run", workers=1, metrics=["aspect_ratio"])
    assert any("read from the cache" in r.getMessage() for r in caplog.records)


def test_main_leaves_the_library_silent_again(synth, tmp_path, capsys):
    assert main(["info", str(synth / "train.json"), "-v"]) == 0
    capsys.readouterr()
    logging.getLogger("qualmet").info("after main")
    logging.getLogger("qualmet.runner").warning("after main")
    assert capsys.readouterr() == ("", "")
