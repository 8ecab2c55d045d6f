"""The checkpoints of a resumable run (out-dir/checkpoints), each tagged with the round it completes.

A client writes ``client-<pid>.r<round>.pt`` as it finishes distilling in that round, the server
``server-*.r<round>.*`` after the round; neither is current before the round is recorded in
rounds.jsonl, the one record of what is done. After round r is recorded, the files r superseded
go (write new, record, then switch). A resumed run that kept n rounds first removes the files of
later rounds (a round cut short, or one whose line in rounds.jsonl was torn) and stale temp files,
then starts every client and the server from their newest file tagged <= n.

``manifest.json`` holds what the checkpoints were made with: the config (less what a resume may
change, fedkd/run_identity.py), the code version and the data fingerprint; a resume with any other
is refused in one line.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from fedkd.config import ExperimentConfig
from fedkd.data.fingerprint import data_fingerprint
from fedkd.errors import ConfigError
from fedkd.results_files import atomic_write_json
from fedkd.run_identity import code_version, resume_identity

CHECKPOINTS = "checkpoints"  # inside out-dir
MANIFEST = "manifest.json"
CURRENT = "current.json"  # {"round": r}: the last round whose files were made current
_TAGGED = re.compile(r"^(?P<stem>[^.].*)\.r(?P<round>\d+)(?P<suffix>\.[A-Za-z0-9]+)$")


def tagged(folder: str | Path, stem: str, server_round: int, suffix: str) -> Path:
    """The file of ``stem`` (client-3, server-weights) that round ``server_round`` completes."""
    return Path(folder) / f"{stem}.r{server_round}{suffix}"


def latest(folder: str | Path, stem: str, suffix: str, up_to: int) -> Path | None:
    """``stem``'s newest file tagged <= ``up_to`` (the last recorded round), if any."""
    found = [(r, path) for path, s, r in _tagged_files(folder) if s == stem + suffix and r <= up_to]
    return max(found)[1] if found else None


def _tagged_files(folder: str | Path) -> list[tuple[Path, str, int]]:
    folder = Path(folder)
    files = []
    for path in folder.iterdir() if folder.is_dir() else []:
        match = _TAGGED.match(path.name)
        if match:
            files.append((path, match["stem"] + match["suffix"], int(match["round"])))
    return files


def switch(folder: str | Path, recorded: int) -> None:
    """Round ``recorded`` is in rounds.jsonl: its files become current, and those they supersede go."""
    atomic_write_json(Path(folder) / CURRENT, {"round": recorded})
    retire_older(folder, recorded)


def current_round(folder: str | Path) -> int:
    """The round of the last switch (0: none yet, or no record of it)."""
    try:
        return int(json.loads((Path(folder) / CURRENT).read_text())["round"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def retire_older(folder: str | Path, recorded: int) -> None:
    """Remove every file tagged <= ``recorded`` that a newer one tagged <= ``recorded`` supersedes."""
    newest: dict[str, int] = {}
    files = [(path, key, r) for path, key, r in _tagged_files(folder) if r <= recorded]
    for _, key, r in files:
        newest[key] = max(r, newest.get(key, 0))
    for path, key, r in files:
        if r < newest[key]:
            path.unlink(missing_ok=True)


def prepare_resume(folder: str | Path, recorded: int) -> None:
    """Before a resumed run that kept ``recorded`` rounds (check_resumable passed): drop the files
    of later rounds and temp files left by a kill mid-write, and keep one current file per client."""
    folder = Path(folder)
    for path, _, r in _tagged_files(folder):
        if r > recorded:
            path.unlink(missing_ok=True)
    for temp in folder.glob(".*.tmp"):
        temp.unlink(missing_ok=True)
    switch(folder, recorded)


def start_fresh(folder: str | Path, cfg: ExperimentConfig) -> None:
    """A fresh run never starts from old models: an empty folder and this run's manifest."""
    shutil.rmtree(folder, ignore_errors=True)
    atomic_write_json(Path(folder) / MANIFEST, manifest(cfg))


def manifest(cfg: ExperimentConfig) -> dict[str, object]:
    return {
        "config": resume_identity(cfg.to_run_config()),
        "code": code_version(),
        "data": _data_or_none(cfg),
    }


def _data_or_none(cfg: ExperimentConfig) -> str | None:
    """None where this process cannot read the data (a `flwr run` ServerApp's host may hold none)."""
    try:
        return data_fingerprint(cfg)
    except (OSError, ValueError):  # ConfigError is a ValueError
        return None


def check_resumable(folder: str | Path, cfg: ExperimentConfig, recorded: int, where: str) -> None:
    """ConfigError in one line unless ``cfg``, this code and this data are those the checkpoints
    in ``folder`` were made with (``where``: the run folder, for the message)."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        if recorded == 0:
            return  # nothing done yet: the resumed run starts from scratch
        raise ConfigError(
            f"--resume {where!r}: {CHECKPOINTS}/{MANIFEST} is missing, so its checkpoints cannot be "
            "trusted; allowed: start the run again"
        )
    try:
        saved = json.loads(path.read_text())
        saved_config = dict(saved["config"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"--resume {where!r}: {CHECKPOINTS}/{MANIFEST} is damaged; allowed: start the run again"
        ) from None
    if current_round(folder) > recorded:  # rounds.jsonl lost a round after its files replaced older ones
        raise ConfigError(
            f"--resume {where!r}: its checkpoints are of round {current_round(folder)}, but its rounds file "
            f"keeps {recorded} (a damaged line); allowed: start the run again"
        )
    now = manifest(cfg)
    changed = sorted(
        k for k in {*saved_config, *now["config"]} if saved_config.get(k) != now["config"].get(k)
    )
    if changed:
        shown = ", ".join(f"{k}: {saved_config.get(k)!r} -> {now['config'].get(k)!r}" for k in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise ConfigError(
            f"--resume {where!r}: results.json's config differs from the one its checkpoints were made "
            f"with ({shown}{more}); allowed: the run's own config, or start the run again"
        )
    for key, what in (("code", "code version"), ("data", "data fingerprint")):
        if saved.get(key) != now[key]:
            raise ConfigError(
                f"--resume {where!r}: the {what} changed since the run started ({saved.get(key)} -> "
                f"{now[key]}); allowed: resume with the {key} that started it, or start the run again"
            )
