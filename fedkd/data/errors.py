"""Data errors are usage errors: the CLI prints them in one line and exits 2 (fedkd/errors.py)."""

from fedkd.errors import DataError

__all__ = ["DataError"]
