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
