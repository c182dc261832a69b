"""The app's generation speed with OpenMP waiters sleeping (PASSIVE, what `compara app` sets)
vs spinning (ACTIVE, the OpenMP default), interleaved in one run.

    python bench/app.py                       # configs/sample.yaml (Gemma 3 270M, the index)
    python bench/app.py -s model.base=tiny-random-llama -s model.quantize=none --repeats 3

Each measurement is a fresh process (the policy is read when OpenMP starts) that drives the
real page with streamlit's AppTest: it asks the same questions, streamed into their columns
as in a browser, and reports each answer's generation time (``latency_s``, the model.generate
call only). Runs alternate PASSIVE, ACTIVE, PASSIVE, ... so other load on the machine slows
both alike. Prints per-arm medians of tokens/s for each policy and their ratio. Answers are
not cached between processes (each gets its own runs folder) and the torch thread count is
fixed (``generation.threads``, default 2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)  # bench/ingest.py must not shadow the ingest package
QUESTIONS = ["Em que data teve lugar a Revolução dos Cravos em Portugal?",
             "Qual era o nome verdadeiro do inconfidente conhecido como Tiradentes?",
             "De que instituição Machado de Assis foi fundador e primeiro presidente?"]


def child(config: str | None, sets: list[str]) -> None:
    """One process: load, ask every question through the page, print the records' timings."""
    from streamlit.testing.v1 import AppTest

    from compara.app.config import ENV_CONFIG, ENV_SET

    os.environ[ENV_CONFIG] = config or ""
    os.environ[ENV_SET] = json.dumps(sets)
    at = AppTest.from_file(str(ROOT / "compare_app.py"), default_timeout=1800).run()
    out = []
    for q in QUESTIONS:
        at.text_area(key="q_text").set_value(q)
        at.button(key="ask_run").click().run()
        if at.exception or at.error:
            raise SystemExit(f"the page failed: {[e.value for e in [*at.exception, *at.error]]}")
        for arm, r in at.session_state["round"].records.items():
            out.append({"arm": arm, "latency_s": r["latency_s"], "tokens": r["tokens_out"]})
    print("RESULT " + json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-c", "--config")
    p.add_argument("-s", "--set", action="append", default=[])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.config, args.set)
        return
    tps: dict[str, dict[str, list[float]]] = {"PASSIVE": {}, "ACTIVE": {}}
    for i in range(args.repeats):
        for policy in ("PASSIVE", "ACTIVE"):
            runs = tempfile.mkdtemp(prefix="bench-app-")
            sets = [*args.set, f"paths.runs={runs}", f"generation.threads={args.threads}"]
            cmd = [sys.executable, __file__, "--child", *(["-c", args.config] if args.config else []),
                   *(x for s in sets for x in ("-s", s))]
            env = {**os.environ, "OMP_WAIT_POLICY": policy, "HF_HUB_OFFLINE": "1",
                   "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{policy} run failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
            for r in json.loads(line[7:]):
                tps[policy].setdefault(r["arm"], []).append(r["tokens"] / r["latency_s"])
            print(f"round {i + 1} {policy}: " + ", ".join(
                f"{a} {statistics.median(v):.1f} tok/s" for a, v in tps[policy].items()), flush=True)
    print(f"\nmedian tokens/s over {args.repeats} x {len(QUESTIONS)} answers per arm "
          f"(torch threads {args.threads}, load average {os.getloadavg()[0]:.1f})")
    print(f"{'arm':<15}{'PASSIVE':>10}{'ACTIVE':>10}{'ratio':>8}")
    for arm in tps["PASSIVE"]:
        a, b = statistics.median(tps["PASSIVE"][arm]), statistics.median(tps["ACTIVE"][arm])
        print(f"{arm:<15}{a:>10.1f}{b:>10.1f}{a / b:>8.2f}")


if __name__ == "__main__":
    main()
