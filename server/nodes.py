"""Waiting for the federation's nodes, and failing fast (one line) when too few connect.

Nodes register a moment after the ServerApp starts, so the server polls the grid's node ids.
Under `flwr run` a federation with fewer SuperNodes than ``num-clients`` can never start: after
``min-nodes-wait`` seconds the server stops with one line saying how many it expected and how
many it found. Flower logs a ServerApp's exception with its traceback and exits non-zero; for
this one, whose message is the whole story, the traceback is dropped from the log.
"""

from __future__ import annotations

import logging
import time

from flwr.serverapp import Grid

log = logging.getLogger("flwr.fedkd")
SAY_WAITING_AFTER_S = 2.0  # a wait longer than this is announced, so it is never a silence


class MissingNodes(RuntimeError):
    """Fewer nodes connected than num-clients; the message is one line."""


def wait_for_nodes(grid: Grid, count: int, timeout_s: float, poll_s: float = 0.1) -> list[int]:
    """The sorted node ids once ``count`` nodes are connected; MissingNodes after ``timeout_s``."""
    start = time.monotonic()
    announced = False
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        waited = time.monotonic() - start
        if waited >= timeout_s:
            raise MissingNodes(
                f"expected num-clients={count} nodes, found {len(nodes)} after waiting {timeout_s:g} s "
                f"(min-nodes-wait); start {count - len(nodes)} more SuperNode(s), or for a `flwr run` "
                "simulation set num-supernodes = num-clients (docs/engines.md)"
            )
        if not announced and waited >= SAY_WAITING_AFTER_S:
            log.info("waiting up to %g s for %d nodes; %d connected so far", timeout_s, count, len(nodes))
            announced = True
        time.sleep(min(poll_s, max(timeout_s - waited, 0.0)))


class _OneLineMissingNodes(logging.Filter):
    """Render Flower's "ServerApp raised an exception" for MissingNodes as one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, MissingNodes):
            record.msg, record.args = f"{record.getMessage()}: {exc}", None
            record.exc_info, record.exc_text = None, None
        return True


_FILTER = _OneLineMissingNodes()


def one_line_missing_nodes() -> None:
    """Install the filter on Flower's logger (idempotent: one instance, added once)."""
    logging.getLogger("flwr").addFilter(_FILTER)
