"""Errors a user can fix by changing what they asked for: a bad config value, a missing or
damaged data file. The CLI prints the one-line message and exits with code 2.

This module imports nothing from fedkd, so every layer (config, registries, data, results,
the CLI) can raise these without importing the config: that is what once tied fedkd/ into an
import loop (config -> validation -> registries -> config).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad configuration value; the message is one line naming the value and what is allowed."""


class DataError(ConfigError):
    """Missing, corrupt or inconsistent data files; the message names the file."""


class RunFolderError(OSError):
    """The run folder cannot take what the run must write (disk full, read-only): the run fails
    rather than dropping the clients whose files did not land (the CLI exits 1, not 2)."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the run: a KeyboardInterrupt, so every Ctrl-C path applies,
    that remembers which signal came (the exit code is 128 + ``signum``)."""

    def __init__(self, signum: int, reason: str) -> None:
        super().__init__(reason)
        self.signum, self.reason = signum, reason

    def __reduce__(self) -> tuple[type, tuple[int, str]]:
        """Whole across processes: a worker's interruption reaches its pool's parent intact."""
        return type(self), (self.signum, self.reason)


_stopping: list[Interrupted] = []  # the interruption this process is ending for, once one came


def stopping() -> Interrupted | None:
    """The interruption under way in this process (set by experiments/stop_signals.py). Code that
    turns exceptions into results (a ClientApp's error reply) raises it instead: a C extension
    turns a KeyboardInterrupt raised in its Python callback into its own error (torch.save's
    "unexpected pos"), and the run would go on as if no signal had come."""
    return _stopping[0] if _stopping else None


def set_stopping(stop: Interrupted | None) -> None:
    _stopping[:] = [] if stop is None else [stop]


class PluginError(ConfigError):
    """An installed plugin (a ``fedkd.*`` entry point) that fails to load or registers nothing;
    the message names the entry point."""
