"""Progress inside a round: clients done / total for each phase, with an ETA.

On a terminal, a tqdm bar per phase on stderr (gone when the phase ends, so the round lines stay
clean); elsewhere (a log file, CI, `flwr run --stream`) a plain line every LINE_EVERY_S seconds
of a long phase and one when it ends, never a line per client. The round driver hands every
reply to ``collect_replies``, which counts it and returns the replies untouched: progress never
changes a number.

The mode is process-wide, like logging's level: ``fedkd run`` sets it (``auto``); sweep workers
and tests leave it ``off``; `flwr run`'s ServerApp asks for ``lines``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid
from tqdm import tqdm

MODES = ("off", "auto", "bar", "lines")
LINE_EVERY_S = 10.0  # lines mode: a long phase says where it is this often
POLL_S = 1.0  # pull interval on grids that do not set one (Flower's in-memory grid: 0.1 s)
log = logging.getLogger("flwr.fedkd")
_configured = {"mode": "off"}


def configure_progress(mode: str) -> None:
    """Set this process's progress mode (off, auto: a bar on a terminal, else lines; bar; lines)."""
    if mode not in MODES:
        raise ValueError(f"progress mode {mode!r}; allowed: {', '.join(MODES)}")
    _configured["mode"] = mode


def resolve_mode(mode: str | None) -> str:
    """``None``: the configured mode; ``auto``: a bar when stderr is a terminal, else lines."""
    mode = mode or _configured["mode"]
    if mode == "auto":
        return "bar" if sys.stderr.isatty() else "lines"
    return mode


class Phase:
    """One phase's count of replies; safe to call from client threads (in-process workers)."""

    def __init__(self, label: str, total: int, mode: str) -> None:
        self.label, self.total, self.mode = label, total, mode
        self.started = time.monotonic()
        self.next_line = self.started + LINE_EVERY_S
        self.seen: set[str] = set()  # ids of the messages answered (a reply is counted once)
        self.lock = threading.Lock()
        self.bar = None
        if mode == "bar":
            self.bar = tqdm(
                total=total, desc=label, unit="client", leave=False, file=sys.stderr, dynamic_ncols=True
            )

    @property
    def done(self) -> int:
        return len(self.seen)

    def reply(self, message: Message) -> None:
        """A client answered (error replies count too: that client is done)."""
        with self.lock:
            key = message.metadata.reply_to_message_id or str(id(message))
            if key in self.seen or self.done >= self.total:
                return
            self.seen.add(key)
            if self.bar is not None:
                self.bar.update(1)
        self.tick()

    def eta_s(self) -> float | None:
        """Seconds left at the pace so far (None before the first reply)."""
        if not self.done:
            return None
        return (time.monotonic() - self.started) / self.done * (self.total - self.done)

    def tick(self) -> None:
        """Lines mode: say where the phase is, at most every LINE_EVERY_S seconds."""
        now = time.monotonic()
        if self.mode != "lines" or now < self.next_line:
            return
        self.next_line = now + LINE_EVERY_S
        eta = self.eta_s()
        log.info(
            "%s: %d/%d clients done, %.0f s, ETA %s",
            self.label,
            self.done,
            self.total,
            now - self.started,
            f"{eta:.0f} s" if eta is not None else "unknown",
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.refresh()  # the final count is drawn even when replies came faster than tqdm redraws
            self.bar.close()
        elapsed = time.monotonic() - self.started
        if self.mode == "lines" and elapsed >= LINE_EVERY_S:
            log.info("%s: %d/%d clients done in %.0f s", self.label, self.done, self.total, elapsed)


class RoundProgress:
    """Makes the Phase of each step of a round; ``mode`` None: the process's configured mode."""

    def __init__(self, mode: str | None = None) -> None:
        self.mode = resolve_mode(mode)

    @contextmanager
    def phase(self, label: str, total: int) -> Iterator[Phase]:
        phase = Phase(label, total, self.mode)
        try:
            yield phase
        finally:
            phase.close()


def collect_replies(
    grid: Grid, messages: list[Message], timeout: float | None, phase: Phase
) -> list[Message]:
    """Send ``messages`` and collect their replies as ``grid.send_and_receive`` does, telling
    ``phase`` of each reply as it arrives.

    A grid that runs the ClientApp while sending (server/inprocess/grid.py) reports each reply
    through its ``on_reply`` hook; on Flower's grids the replies are pulled as they come."""
    if hasattr(grid, "on_reply"):
        grid.on_reply = phase.reply
        try:
            return list(grid.send_and_receive(messages, timeout=timeout))
        finally:
            grid.on_reply = None
    return _push_and_pull(grid, messages, timeout, phase.reply, phase.tick)


def _push_and_pull(
    grid: Grid,
    messages: Iterable[Message],
    timeout: float | None,
    on_reply: Callable[[Message], Any],
    on_wait: Callable[[], Any],
) -> list[Message]:
    """Flower 1.41's ``Grid.send_and_receive`` loop (push, then pull until every reply is in or
    ``timeout`` seconds have passed), with a call per reply and per wait."""
    pending = set(grid.push_messages(messages))
    end_time = time.time() + (timeout if timeout is not None else 0.0)
    replies: list[Message] = []
    while timeout is None or time.time() < end_time:
        pulled = list(grid.pull_messages(pending))
        replies.extend(pulled)
        for reply in pulled:
            on_reply(reply)
        pending.difference_update(reply.metadata.reply_to_message_id for reply in pulled)
        if not pending:
            break
        on_wait()
        time.sleep(getattr(grid, "pull_interval", POLL_S))
    return replies
