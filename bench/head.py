"""Answering with the output head's product by fbgemm's fp16-weight kernel
(``model.fp16_head_on_cpu``) against the plain fp32 head (torch's ``linear``).

    python bench/head.py                                 # gemma3-270m as the demo loads it
    python bench/head.py --rounds 3 --new-tokens 64
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python bench/head.py   # as an AVX2 CPU

The model computes in fp32 here whatever the CPU (``model.dtype=float32``): that is where the
kernel is used (a CPU without native bf16, or that setting); with bf16 compute the head is a
bf16 product already and is left as it is.

Two prompt sets answered by the base arm of configs/sample.yaml (its 4-bit weights unpacked, as
``compara batch`` answers on a CPU), greedy, ``--new-tokens`` tokens with no end-of-sequence
token (every row decodes the same number of steps in both cases), 12 rows at a time
(``generation.batch_size`` of the demo): twelve questions of questions/amostra.jsonl in the
instruction template (the base and fine-tuned arms' prompts) and twelve RAG prompts the shape of
the demo's (``retrieval.k`` passages of 800 characters of the test fixtures' prose). Each round
runs both heads on both sets, alternating which goes first; the time is the whole
``generate_prompts`` call (the prefill included: both do it alike, the head only on each
prompt's last position). Prints the medians, the ratio fp16-packed/fp32 and how many answers
are the same token ids (the weights are the same; the sums' order may move a near tie).
Results: bench/out/head.json.
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
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("-s", "--set", action="append", default=[], help="config override")
    args = ap.parse_args()

    import psutil
    import torch
    from measures import _passages, _questions

    from compara.comparison import build_comparison
    from compara.config import load_config
    from core.models.loading import cpu_capability, pack_head_fp16, unpack_4bit
    from core.prompts import RagTemplate

    cfg = load_config(ROOT / "configs/sample.yaml",
                      [f"generation.max_new_tokens={args.new_tokens}",
                       "model.fp16_head_on_cpu=false", *args.set, "model.dtype=float32"])
    comparison = build_comparison(cfg, arms=["base"])
    model = comparison.loaded.model
    unpack_4bit(model, psutil.virtual_memory().available // 4)
    plain_head = model.get_output_embeddings()
    if not pack_head_fp16(model):
        sys.exit("the head cannot be packed in fp16 here (no fbgemm, or weights not fp16 values)")
    heads = {"fp32": plain_head, "fp16-packed": model.get_output_embeddings()}
    tokenizer = comparison.loaded.tokenizer
    eos = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = None  # every row decodes --new-tokens steps
    questions = _questions(PROMPTS)
    rag = RagTemplate.load()
    passages = [dict(p, text=p["text"][:cfg.index.chunk_size]) for p in _passages(cfg.retrieval.k)]
    sets = {"short": [comparison.template.render(q.question) for q in questions],
            "rag": [rag.render(comparison.template, q.question, passages) for q in questions]}
    lengths = {k: [len(tokenizer(p).input_ids) for p in v] for k, v in sets.items()}
    print(f"cpu capability: {torch.backends.cpu.get_cpu_capability()} ({cpu_capability()}), "
          f"dtype {comparison.loaded.info.dtype}, torch threads {torch.get_num_threads()}; "
          + "; ".join(f"{len(v)} {k} prompts of {min(v)}-{max(v)} tokens"
                      for k, v in lengths.items())
          + f"; {args.new_tokens} new tokens, {PROMPTS} rows at a time", flush=True)
    comparison.decoding = dataclasses.replace(cfg.generation, batch_size=PROMPTS,
                                              stop_strings=[], stop_at_line_break=False)
    comparison.generate_prompts("base", sets["short"][:2])  # warm-up
    times = {(s, h): [] for s in sets for h in heads}
    answers = {}
    try:
        for r in range(args.rounds):
            order = list(heads) if r % 2 == 0 else list(heads)[::-1]
            for name, prompts in sets.items():
                for head in order:
                    model.set_output_embeddings(heads[head])
                    t0 = time.perf_counter()
                    gens = comparison.generate_prompts("base", prompts)
                    times[name, head].append(time.perf_counter() - t0)
                    answers.setdefault((name, head), [g.token_ids for g in gens])
                    print(f"round {r + 1} {name} {head}: {times[name, head][-1]:.2f} s",
                          flush=True)
    finally:
        model.generation_config.eos_token_id = eos
    rows = []
    print(f"{'prompts':>8}{'fp32 s':>10}{'fp16-packed s':>15}{'ratio':>8}{'same answers':>14}")
    for name in sets:
        a, b = (statistics.median(times[name, h]) for h in heads)
        same = sum(x == y for x, y in zip(*(answers[name, h] for h in heads), strict=True))
        rows.append({"prompts": name, "prompt_tokens": lengths[name],
                     "new_tokens": sum(len(x) for x in answers[name, "fp32"]),
                     "fp32_s": times[name, "fp32"], "fp16_packed_s": times[name, "fp16-packed"],
                     "median_fp32_s": a, "median_fp16_packed_s": b, "ratio": b / a,
                     "same_answers": same})
        print(f"{name:>8}{a:>10.2f}{b:>15.2f}{b / a:>8.2f}{same:>10}/{PROMPTS}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "head.json").write_text(json.dumps(
        {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
         "dtype": comparison.loaded.info.dtype, "new_tokens_each": args.new_tokens,
         "results": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"written {OUT / 'head.json'}")


if __name__ == "__main__":
    main()
