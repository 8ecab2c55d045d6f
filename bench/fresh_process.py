"""Run one benchmark measurement in a fresh Python process, so settings never share caches."""

from __future__ import annotations

import json
import subprocess
import sys


def measure_in_fresh_process(script: str, args: list[str], what: str) -> dict:
    """Run ``python script *args``; its last stdout line is the measurement as JSON."""
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{what} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
