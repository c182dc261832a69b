"""Run every benchmark in bench/ in turn (`make bench`). Each prints its own table and ratios
and writes its figures under bench/out/; BENCHMARKS.md records them with their commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["ingest.py", "retrieval.py", "exposure.py", "finetune.py", "loss.py", "packed_attention.py",
         "compare.py", "prefill.py", "head.py",
         "app.py"]


def main() -> int:
    failed = []
    for name in ORDER:
        script = HERE / name
        if not script.exists():
            continue
        print(f"\n=== bench/{name} ===", flush=True)
        if subprocess.run([sys.executable, str(script)]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
