"""Training steps on packed rows: attention example by example (compara) vs transformers' sdpa
with its block-diagonal mask over the whole row (the library's own packed path).

    python bench/packed_attention.py                      # the sample config's run, 3 rounds
    python bench/packed_attention.py -c configs/sample.yaml --rounds 2 --long 4 --short 32
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python bench/packed_attention.py
                                                          # a CPU without native bf16, simulated

The model is loaded and wrapped as `compara finetune` does (the config's quantisation, LoRA on
the configured modules, the dtype chosen for this CPU: printed), and the rows are the run's
own records, tokenized as training tokenizes them (reading tasks included where the config
asks for them and the index exists): the longest examples packed together (reading tasks) and
the shortest (facts), eight and sixty-four to a row by default (--long, --short). Each timed
step is a forward and backward pass through the training loss; the two attention paths
alternate within a round, the order flipping each round, in the same process on the same
weights (the switch only changes which attention function the layers call). Prints train
tokens/s per row kind and path, the median of each, and the ratio compara / transformers;
results go to bench/out/packed_attention.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-c", "--config", type=Path, default=ROOT / "configs" / "sample.yaml")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--long", type=int, default=8, help="longest examples packed in one row")
    p.add_argument("--short", type=int, default=64, help="shortest examples packed in one row")
    a = p.parse_args()

    import torch

    from compara.config import load_config
    from core.models.loading import compute_plan
    from finetune import attention
    from finetune.data import PackedCollator
    from finetune.loss import fusable_head, response_loss
    from finetune.train import prepare

    cfg = load_config(a.config)
    print(compute_plan(cfg.model), flush=True)
    prepared = prepare(cfg, cfg.paths.data)
    model = prepared.loaded.model
    base = model.get_base_model()
    if base.config._attn_implementation != attention.NAME:
        print(f"the model uses {base.config._attn_implementation} attention: nothing to compare")
        return 1
    head = fusable_head(base)
    examples = prepared.train.examples
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    rows = {f"{a.long} longest": order[-a.long:], f"{a.short} shortest": order[:a.short]}
    collate = PackedCollator()

    def step(ids, packed: bool) -> tuple[int, float]:
        batch = collate([{"input_ids": examples[j].input_ids, "labels": examples[j].labels}
                         for j in ids])
        # transformers' path: the same layers with the sdpa attention and mask functions
        base.config._attn_implementation_internal = attention.NAME if packed else "sdpa"
        try:
            t0 = time.perf_counter()
            loss, _ = response_loss(model, batch, head, base.config)
            loss.backward()
            seconds = time.perf_counter() - t0
        finally:
            base.config._attn_implementation_internal = attention.NAME
            model.zero_grad(set_to_none=True)
        return batch["input_ids"].numel(), seconds

    model.train()
    step(order[:8], True)  # warm-up
    lengths = {name: [len(examples[j].input_ids) for j in ids] for name, ids in rows.items()}
    print("rows: " + "; ".join(f"{name}: {sum(v):,} tokens ({min(v)}-{max(v)} per example)"
                                for name, v in lengths.items()), flush=True)
    runs = []
    for rnd in range(a.rounds):
        for name, ids in rows.items():
            paths = [True, False] if rnd % 2 == 0 else [False, True]
            for packed in paths:
                tokens, seconds = step(ids, packed)
                arm = "compara" if packed else "transformers"
                runs.append({"round": rnd, "row": name, "arm": arm, "tokens": tokens,
                             "seconds": round(seconds, 3),
                             "tokens_per_second": round(tokens / seconds, 1)})
                print(f"  round {rnd} {name:>11} {arm:>12}: {tokens / seconds:6.1f} tok/s "
                      f"({seconds:.1f} s)", flush=True)
    summary = {}
    print(f"\n{'row':>11} {'compara tok/s':>14} {'transformers':>13} {'ratio':>6}")
    for name in rows:
        med = {arm: statistics.median(r["tokens_per_second"] for r in runs
                                      if r["row"] == name and r["arm"] == arm)
               for arm in ("compara", "transformers")}
        per_round = [
            next(r for r in runs if r["round"] == k and r["row"] == name and r["arm"] == "compara")
            ["tokens_per_second"] /
            next(r for r in runs if r["round"] == k and r["row"] == name
                 and r["arm"] == "transformers")["tokens_per_second"]
            for k in range(a.rounds)]
        ratio = statistics.median(per_round)
        summary[name] = {**med, "ratio": round(ratio, 2), "tokens": sum(lengths[name])}
        print(f"{name:>11} {med['compara']:14.1f} {med['transformers']:13.1f} {ratio:5.2f}x")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "packed_attention.json").write_text(json.dumps(
        {"config": str(a.config), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
         "compute": compute_plan(cfg.model), "runs": runs, "summary": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
