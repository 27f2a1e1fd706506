"""Arms trained by your own trainer: ``[detector] command = "..."`` instead of the built-in detector.

For each arm x seed qualmet writes the arm's training subset (``{train}``, COCO) and the test split
(``{test}``, COCO, images beside it through its ``.images`` sidecar), runs the command in a fresh
folder (``{out}``) and reads back the COCO results file the command must write there,
``{out}/predictions.json``. Those predictions are checked against the test frames and scored exactly
as the built-in detector's (:func:`qualmet.evaluate.evaluate`). The placeholders ``{seed}`` and
``{iters}`` (the spec's ``[detector] iters``) are there for trainers that take them; paths are
shell-quoted. A failing command is one error with its exit code and the last lines of its output
(the whole output is in ``{out}/command.log``); the arm's result.json is written only after
scoring, so a rerun retries the arm, in a fresh folder, like the built-in detector's.
"""
from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pandas as pd

from ..atomic import write_text
from ..dataset import Dataset
from ..errors import QualmetError
from ..formats import load_predictions, save_coco

PLACEHOLDERS = ("train", "test", "out", "seed", "iters")
TAIL_LINES = 15


def check_command(command: object, where: str) -> None:
    """A command is a non-empty string whose {placeholders} are all known."""
    import string

    if not isinstance(command, str) or not command.strip():
        raise QualmetError(f"{where}: [detector] command must be a shell command (a string), got {command!r}")
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(command) if f is not None}
    except ValueError as exc:
        raise QualmetError(f"{where}: [detector] command: {exc} (write {{{{ and }}}} for literal braces)") from None
    unknown = sorted(names - set(PLACEHOLDERS))
    if unknown:
        raise QualmetError(f"{where}: [detector] command: unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}; "
                           f"known: {', '.join('{' + n + '}' for n in PLACEHOLDERS)}")


def external_predictions(command: str, subset_json: Path, test: Dataset, arm_dir: Path, seed: int,
                         iters: int) -> pd.DataFrame:
    """Run ``command`` for one arm in ``arm_dir/external`` (made afresh) and return its checked
    predictions on ``test``."""
    work = arm_dir / "external"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    test_json = arm_dir / "test.json"
    save_coco(test, test_json)
    q = {"train": shlex.quote(str(Path(subset_json).resolve())), "test": shlex.quote(str(test_json.resolve())),
         "out": shlex.quote(str(work.resolve())), "seed": str(seed), "iters": str(iters)}
    line = command.format(**q)
    proc = subprocess.run(line, shell=True, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    write_text(work / "command.log", f"$ {line}\n{proc.stdout}")
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-TAIL_LINES:])
        raise QualmetError(f"{arm_dir}: [detector] command exited with code {proc.returncode} "
                           f"(whole output in {work / 'command.log'}); its last lines:\n{tail}")
    preds = work / "predictions.json"
    if not preds.is_file():
        raise QualmetError(f"{arm_dir}: [detector] command finished but wrote no {preds} (a COCO results list "
                           "on the {test} frames)")
    return load_predictions(preds, test)
