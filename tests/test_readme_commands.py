"""Every `fedkd` command in the fenced bash blocks of README.md, docs/usage.md and docs/results.md
runs, in that order, in one scratch folder, as printed, with small settings substituted so the
pages take minutes: each run, sweep and tune gets SMALL (one round, four clients, ...), a sweep or tune
file is replaced by a copy with one value per axis (two seeds, every algorithm) and a tuning
file made by the page's own `fedkd tune`, workers and trials are cut. Shell lines that are not
fedkd (installs, pytest) are left out; `export` sets the environment; `> FILE` writes FILE."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from experiments.cli import main
from experiments.cli_sweep import resolve_sweep_file

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("README.md", "docs/usage.md", "docs/results.md")
BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
SMALL = {
    "engine": "inprocess",  # the same numbers as ray on CPU (docs/engines.md), without starting Ray
    "rounds": 1,
    "num-clients": 4,
    "local-epochs": 1,
    "distill-epochs": 1,
    "revisit-epochs": 1,
    "transfer-size": 60,
    "max-client-samples": 60,
    "fedmd-pretrain-epochs": 1,
    "feddf-server-steps": 5,
    "eval-every": 1,
}
CUT = {"--workers": "1", "--trials": "2"}  # option -> the small value it gets
# what a command does as printed where the page's own order cannot set the scene it describes
EXPECTED_ERRORS = {"fedkd run --resume runs/fedmd-a01": "already completed; nothing to resume"}


def page_commands() -> list[tuple[str, str]]:
    """(page, shell line) of every fenced bash block, in page order."""
    found = []
    for page in PAGES:  # every page must exist: one that moves must move here too
        for block in BLOCK.findall((ROOT / page).read_text()):
            found += [(page, line) for line in block.splitlines() if line.strip()]
    return found


class Page:
    """The scratch folder the page's commands share, and how each is made small."""

    def __init__(self, folder: Path, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folder, self.data, self.monkeypatch = folder, data, monkeypatch
        self.tuned: dict[str, Path] = {}  # sweep name -> tuned.toml written by the page's fedkd tune

    def path(self, token: str) -> str:
        """A repository path (experiments/configs/...) as an absolute one; the data folder as ours."""
        if token.startswith("../shared/data"):
            return str(self.data)
        if token.startswith("runs/"):  # what the commands write: here, never a checkout's own runs/
            return token
        return str(ROOT / token) if not (self.folder / token).exists() and (ROOT / token).exists() else token

    def small_sweep(self, name: str) -> str:
        """A copy of the sweep file: one value per axis (seeds: two; algorithms: all), SMALL base."""
        path = resolve_sweep_file(self.path(name))
        spec = tomllib.loads(path.read_text())
        grid = spec.get("grid", {})
        for axis, values in grid.items():
            grid[axis] = values if axis == "algorithm" else values[: 2 if axis == "seed" else 1]
        spec["base"] = {**spec.get("base", {}), **SMALL}
        spec.pop("tuned", None)
        if spec["name"] in self.tuned:  # the settings tuned on this small base, not the committed ones
            spec["tuned"] = str(self.tuned[spec["name"]])
        out = self.folder / "small-sweeps" / path.name
        out.parent.mkdir(exist_ok=True)
        lines = [f"name = {json.dumps(spec['name'])}"] + (
            [f"tuned = {json.dumps(spec['tuned'])}"] if "tuned" in spec else []
        )
        for table in ("base", "grid", "zip"):
            if table in spec:
                lines += [f"[{table}]", *(f"{k} = {json.dumps(v)}" for k, v in spec[table].items())]
        out.write_text("\n".join(lines) + "\n")
        return str(out)

    def arguments(self, words: list[str]) -> list[str]:
        """The command's arguments with paths resolved and small settings substituted."""
        command, args = words[0], [self.path(w) for w in words[1:]]
        for i, word in enumerate(args[:-1]):
            if word in CUT:
                args[i + 1] = CUT[word]
        if command in ("sweep", "tune"):
            args[0] = self.small_sweep(args[0])
            if command == "tune" and "--trials" not in args:
                args += ["--trials", CUT["--trials"]]
        if command in ("run", "sweep", "tune") and "--resume" not in args:
            args += [part for key, value in SMALL.items() for part in ("--set", f"{key}={value}")]
        return [command, *args]

    def run(self, line: str) -> str:
        """Run one shell line's fedkd part; returns what it printed."""
        words = shlex.split(line, comments=True)
        if words and words[0] == "export":
            key, value = words[1].split("=", 1)
            self.monkeypatch.setenv(key, self.path(value))
            return ""
        segments = [shlex.split(part, comments=True) for part in line.split("&&")]
        fedkd = [s for s in segments if s and Path(s[0]).name == "fedkd"]
        if not fedkd:
            return ""  # an install or pytest line: nothing of fedkd's to check
        words = fedkd[-1][1:]
        target = None
        if ">" in words:
            target, words = words[words.index(">") + 1], words[: words.index(">")]
        result = CliRunner().invoke(main, self.arguments(words))
        expected = next((why for cmd, why in EXPECTED_ERRORS.items() if line.startswith(cmd)), None)
        if expected:
            assert result.exit_code == 2 and expected in result.output, (line, result.output)
            return result.output
        assert result.exit_code == 0, (line, result.output[-3000:], result.exception)
        if target:
            (self.folder / target).write_text(result.output)
        if words[0] == "tune":
            out = words[words.index("--out") + 1]
            name = tomllib.loads(resolve_sweep_file(self.path(words[1])).read_text())["name"]
            self.tuned[name] = self.folder / out / "tuned.toml"
        return result.output


def test_the_pages_hold_fedkd_commands():
    lines = [line for _, line in page_commands() if "fedkd " in line]
    assert len(lines) >= 20 and any("fedkd report" in line for line in lines)


@pytest.mark.slow
def test_every_command_of_the_pages_runs(tmp_path, monkeypatch, shared_data):
    monkeypatch.chdir(tmp_path)
    page = Page(tmp_path, shared_data, monkeypatch)
    for where, line in page_commands():
        output = page.run(line)
        if "fedkd partition" in line:  # the example's split gives every class to some client
            total = next(row for row in output.splitlines() if row.strip().startswith("total"))
            assert all(int(count) > 0 for count in total.split("|")[1].split()), (where, line, total)
    assert (tmp_path / "runs" / "alpha" / "results.tex").exists()
    assert (tmp_path / "runs" / "fair-mnist" / "report.md").exists()
