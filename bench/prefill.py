"""Prefill in groups (``generation.prefill_tokens``) against one pass over every joining prompt.

    python bench/prefill.py                              # gemma3-270m as the demo loads it
    python bench/prefill.py --rounds 3 --budgets 0,2048,1024
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python bench/prefill.py   # as an AVX2 CPU

Twelve RAG prompts the shape of the demo's (a question of questions/amostra.jsonl and
``retrieval.k`` passages of 1,000 characters of the test fixtures' prose, trimmed to
``generation.max_prompt_tokens`` as the comparison trims them), ``generation.batch_size`` 12,
answered by the base arm of configs/sample.yaml (its 4-bit weights unpacked, as ``compara
batch`` answers on a CPU), greedy, ``--new-tokens`` tokens, the stop strings on. Each round
runs every budget once, in turn (interleaved: load on a shared machine hits all alike); budget
0 is the previous behaviour, all twelve prompts in one pass. Prints the medians, the ratio to
budget 0 and whether the answers are the same token ids (fp32: always; bf16: a few may move by
rounding). Results: bench/out/prefill.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the compara command sets it
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

PROMPTS = 12


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budgets", default="0,2048",
                    help="generation.prefill_tokens values, comma-separated (0 = one pass)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("-s", "--set", action="append", default=[], help="config override")
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]

    import psutil
    import torch
    from measures import _passages, _questions

    from compara.comparison import build_comparison
    from compara.config import load_config
    from core.models.loading import cpu_capability, unpack_4bit
    from core.prompts import RagTemplate

    cfg = load_config(ROOT / "configs/sample.yaml",
                      [f"generation.max_new_tokens={args.new_tokens}", *args.set])
    comparison = build_comparison(cfg, arms=["base"])
    unpack_4bit(comparison.loaded.model, psutil.virtual_memory().available // 4)
    tokenizer = comparison.loaded.tokenizer
    questions = _questions(PROMPTS)
    rag = RagTemplate.load()
    passages = _passages(cfg.retrieval.k)
    while len(passages) > 1 and max(  # as Comparison.prompt does: fit max_prompt_tokens
            len(tokenizer(rag.render(comparison.template, q.question, passages)).input_ids)
            for q in questions) > cfg.generation.max_prompt_tokens:
        passages = passages[:-1]
    prompts = [rag.render(comparison.template, q.question, passages) for q in questions]
    lengths = [len(tokenizer(p).input_ids) for p in prompts]
    print(f"cpu capability: {torch.backends.cpu.get_cpu_capability()} ({cpu_capability()}), "
          f"dtype {comparison.loaded.info.dtype}, torch threads {torch.get_num_threads()}; "
          f"{len(prompts)} RAG prompts of {min(lengths)}-{max(lengths)} tokens, "
          f"batch_size {cfg.generation.batch_size}", flush=True)
    base_decoding = dataclasses.replace(cfg.generation, batch_size=PROMPTS)
    comparison.decoding = dataclasses.replace(base_decoding, prefill_tokens=2048)
    comparison.generate_prompts("base", prompts[:2])  # warm-up
    times: dict[int, list[float]] = {b: [] for b in budgets}
    answers: dict[int, list[list[int]]] = {}
    for r in range(args.rounds):
        for b in budgets:
            comparison.decoding = dataclasses.replace(base_decoding, prefill_tokens=b)
            t0 = time.perf_counter()
            gens = comparison.generate_prompts("base", prompts)
            times[b].append(time.perf_counter() - t0)
            answers.setdefault(b, [g.token_ids for g in gens])
            print(f"round {r + 1} prefill_tokens={b}: {times[b][-1]:.2f} s", flush=True)
    ref = statistics.median(times[budgets[0]])
    rows = []
    print(f"{'prefill_tokens':>15}{'median s':>10}{'ratio':>8}{'same answers':>14}")
    for b in budgets:
        med = statistics.median(times[b])
        same = sum(a == x for a, x in zip(answers[b], answers[budgets[0]], strict=True))
        rows.append({"prefill_tokens": b, "median_s": med, "times_s": times[b],
                     "ratio_to_first": med / ref, "same_answers": same})
        print(f"{b:>15}{med:>10.2f}{med / ref:>8.2f}{same:>10}/{len(prompts)}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "prefill.json").write_text(json.dumps(
        {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
         "dtype": comparison.loaded.info.dtype, "prompt_tokens": lengths,
         "new_tokens": args.new_tokens, "results": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"written {OUT / 'prefill.json'}")


if __name__ == "__main__":
    main()
