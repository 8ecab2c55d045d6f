"""Idle clients' state on disk: with thousands of registered virtual clients and a few asked per
round, the models of those that sit a round out need not stay in memory.

The in-process Grid hands a node's ``context.state`` (its model, KnFu/KT-pFL extras) to an
``IdleStates`` after each call and takes it back before the next one; between calls it lives in
one file per node under a private (0700) temporary folder, removed when the run ends. A pickle round
trip is exact, so the numbers do not change (tested).
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
from pathlib import Path

from flwr.app import Context, RecordDict


class IdleStates:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="fedkd-idle-clients-"))

    def _file(self, node_id: int) -> Path:
        return self.folder / f"{node_id}.pkl"

    def put_away(self, context: Context) -> None:
        """Move the node's state to disk; the context keeps an empty state."""
        if len(context.state) == 0:
            return
        # scratch, removed with the run: no fsync (thousands of nodes a round)
        self._file(context.node_id).write_bytes(pickle.dumps(context.state, pickle.HIGHEST_PROTOCOL))
        context.state = RecordDict()

    def take_back(self, context: Context) -> Context:
        """The node's context with its state back in memory (a no-op for a node never put away)."""
        path = self._file(context.node_id)
        if path.exists():
            with path.open("rb") as handle:
                context.state = pickle.load(handle)
            path.unlink()
        return context

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
