"""Dataset load times from a data directory (each in a fresh process, so nothing is cached in
memory): MNIST and Fashion-MNIST from idx .gz files, CIFAR-10 from its JPEG archive, cold
(decode + write the array cache) and warm (read the cache). Targets: MNIST < 3 s, CIFAR-10
cached < 3 s.

    python bench/data_loading.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _one(name: str, data_dir: str) -> float:
    sys.path.insert(0, str(ROOT))
    from fedkd.data.sources import load_dataset

    start = time.perf_counter()
    load_dataset(name, data_dir)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=os.environ.get("FEDKD_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    )
    parser.add_argument("--one", nargs=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(args.one[0], args.data_dir)))
        return
    cache = tempfile.mkdtemp(prefix="fedkd-cache-")  # an empty cache: the first CIFAR load is cold
    env = {**os.environ, "FEDKD_CACHE_DIR": cache}
    print(f"data dir {args.data_dir}; array cache {cache}")
    for label, name in [
        ("mnist", "mnist"),
        ("fashion-mnist", "fashion-mnist"),
        ("cifar10 (cold)", "cifar10"),
        ("cifar10 (cached)", "cifar10"),
    ]:
        proc = subprocess.run(
            [sys.executable, __file__, "--data-dir", args.data_dir, "--one", name],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        print(f"{label:>18}: {float(proc.stdout.strip().splitlines()[-1]):6.2f} s")


if __name__ == "__main__":
    main()
