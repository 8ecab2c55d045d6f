"""One ClientApp call as every fedkd engine makes it: an exception becomes an error reply."""

from __future__ import annotations

import logging
import time
import traceback

from flwr.app import Context, Error, Message
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from fedkd.errors import RunFolderError, stopping
from fedkd.protocol import CHECKPOINT_NOT_WRITTEN

log = logging.getLogger("flwr.fedkd")


def error_reply(message: Message, reason: str, code: int = ErrorCode.UNKNOWN) -> Message:
    """An error reply to ``message`` (what Flower's engines send for a failed ClientApp)."""
    return Message(Error(code=code, reason=reason), reply_to=message)


def call_client_app(app: ClientApp, message: Message, context: Context) -> Message:
    """The app's reply; a ClientApp exception is reported as an error reply, as Flower does,
    unless this process is stopping for a signal (the exception may be that signal, disguised)."""
    try:
        return app(message, context)
    except Exception as exc:  # noqa: BLE001 - reported as an error reply, as Flower does
        stop = stopping()
        if stop is not None:
            raise stop from exc
        log.debug("ClientApp raised on node %s:\n%s", context.node_id, traceback.format_exc())
        return error_reply(message, f"{type(exc).__name__}: {exc}", ErrorCode.CLIENT_APP_RAISED_EXCEPTION)


def raise_folder_errors(replies: list[Message]) -> None:
    """A client that could not write its checkpoint (run folder full or read-only) fails the run
    with its reason, rather than being dropped from a round that then looks complete."""
    for reply in replies:
        reason = reply.error.reason if reply.has_error() else ""
        if CHECKPOINT_NOT_WRITTEN in (reason or ""):
            line = next(line for line in reason.splitlines() if CHECKPOINT_NOT_WRITTEN in line)
            raise RunFolderError(line[line.index(CHECKPOINT_NOT_WRITTEN) :])


def seconds_left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (time.monotonic; never negative); None: no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())
