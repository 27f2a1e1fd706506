"""qualmet's messages and progress bars: the one place that decides what reaches the terminal.

Library code never prints. It logs to the ``qualmet`` logger (``logger.info("wrote ...")``,
``logger.debug(...)`` for what ``--verbose`` adds) and draws bars through :func:`bar`. Called from
Python, qualmet therefore stays silent unless the caller asks: ``logging.basicConfig(level=INFO)``
for the messages, ``progress=True`` for the bars. The command line asks through :func:`configure`
(``--quiet``: warnings and errors only; ``--verbose``: debug lines too) and ``--no-progress``.

Bars are also off whenever stderr is not a terminal (a redirected log gets no carriage-return
lines); a command's own output (a table, JSON) is printed, not logged, so ``--quiet`` keeps it.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger("qualmet")
logger.addHandler(logging.NullHandler())  # no "No handlers could be found" and no lastResort output from a library

QUIET, NORMAL, VERBOSE = -1, 0, 1
_LEVELS = {QUIET: logging.WARNING, NORMAL: logging.INFO, VERBOSE: logging.DEBUG}


class _TerminalHandler(logging.Handler):
    """Info to stdout as the bare message; warnings and errors to stderr as 'qualmet: warning: ...';
    debug lines to stderr as 'debug: ...'. The streams are looked up when a record is written, so a
    redirected or captured sys.stdout/sys.stderr is honoured."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.levelno >= logging.WARNING:
                stream, text = sys.stderr, f"qualmet: {record.levelname.lower()}: {msg}"
            elif record.levelno >= logging.INFO:
                stream, text = sys.stdout, msg
            else:
                stream, text = sys.stderr, f"debug: {msg}"
            if "tqdm" in sys.modules:  # a bar may be on screen: tqdm clears it, writes the line, redraws it
                sys.modules["tqdm"].tqdm.write(text, file=stream)
            else:
                stream.write(text + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001  logging must never take the command down
            self.handleError(record)


def configure(verbosity: int = NORMAL) -> logging.Handler:
    """Show qualmet's messages on the terminal at ``verbosity`` (QUIET, NORMAL or VERBOSE); returns
    the handler, for :func:`unconfigure`. Replaces a handler an earlier call installed."""
    unconfigure()
    handler = _TerminalHandler()
    handler.qualmet_terminal = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(_LEVELS[max(QUIET, min(VERBOSE, verbosity))])
    logger.propagate = False  # the root logger (a user's basicConfig) would print each line twice
    return handler


def unconfigure() -> None:
    """Back to a silent library: remove the terminal handler :func:`configure` installed."""
    for h in [h for h in logger.handlers if getattr(h, "qualmet_terminal", False)]:
        logger.removeHandler(h)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


def bar(iterable: Iterable[Any] | None = None, *, enabled: bool, total: int | None = None, desc: str = "",
        unit: str = "it", initial: int = 0) -> Any:
    """A tqdm bar on stderr, drawn only when ``enabled`` and stderr is a terminal (or a notebook,
    where tqdm draws a widget)."""
    from tqdm.auto import tqdm

    on = enabled and (_is_terminal(sys.stderr) or "ipykernel" in sys.modules)
    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=not on, dynamic_ncols=True,
                file=sys.stderr)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
