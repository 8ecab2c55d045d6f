"""What fedkd's commands print reads cleanly anywhere: colour only on a terminal (never where
``NO_COLOR`` is set, https://no-color.org), and no carriage-return bars in a log file.

Flower's console handler colours every level name whatever its stream is, and Flower is imported
lazily, after the CLI configured logging (so that `fedkd --help` does not wait for it). A filter
on the ``flwr`` loggers therefore sets the colour through Flower's own
``update_console_handler`` before each record is handled, once Flower's logger module is there.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO


def colour_wanted(stream: TextIO | None = None) -> bool:
    """Colour on a terminal (default: stderr), unless NO_COLOR is set to anything non-empty."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not os.environ.get("NO_COLOR") and callable(isatty) and bool(isatty())


def progress_bars_wanted(stream: TextIO | None = None) -> bool:
    """Redrawn bars (tqdm) on a terminal only; elsewhere a plain line per step."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return callable(isatty) and bool(isatty())


class ConsoleColour(logging.Filter):
    """Never drops a record: it tells Flower's console handler whether to colour first."""

    def filter(self, record: logging.LogRecord) -> bool:
        flower_logger = sys.modules.get("flwr.supercore.logger")
        if flower_logger is not None:
            flower_logger.update_console_handler(colored=colour_wanted())
        return True


def plain_unless_terminal() -> None:
    """Install the colour rule on Flower's logger and fedkd's child of it (a logger's filters do
    not see records propagated from its children), and tell Ray to leave its prefixes plain."""
    for name in ("flwr", "flwr.fedkd"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, ConsoleColour) for f in logger.filters):
            logger.addFilter(ConsoleColour())
    if not colour_wanted():  # Ray prefixes each line of its actors with a coloured "(pid=...)"
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
