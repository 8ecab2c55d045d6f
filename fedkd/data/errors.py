"""Data errors are usage errors: the CLI prints them in one line and exits 2."""

from fedkd.config import ConfigError


class DataError(ConfigError):
    """Missing, corrupt or inconsistent data files; the message names the file."""
