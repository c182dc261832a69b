"""Training's loss over response tokens: our fused head + cross-entropy (``finetune.loss``)
against the plain library path (the head's logits materialised, ``cross_entropy``, autograd).

    python bench/loss.py                                  # the compute dtype the CPU gets
    python bench/loss.py --positions 1024 --rounds 5
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python bench/loss.py   # as an AVX2 CPU

The shape of the demo's model: Gemma 3 270M's head, 262,144 x 640, frozen; ``--positions``
response positions of random hidden states and targets (the time does not depend on the
values). The compute dtype is the one compara trains in on this CPU (bf16 where it is native,
else fp32; ``--dtype`` to choose). Each round runs, in turn and alternating which goes first:

* ``fused``: ``fused_head_cross_entropy`` as shipped (chunks of ``CHUNK_ELEMENTS`` logits);
* ``fused-64``: the same with chunks of 64 positions (the setting before 256);
* ``plain``: ``linear`` then ``cross_entropy`` over all positions, ``backward`` to the hidden
  states (what the model's own loss does, all logits at once).

Each is the forward and the backward to the hidden states (the head is frozen). Prints the
medians, ms per position, the ratios fused/plain and fused/fused-64, and checks that the three
agree on the loss (relative 1e-3: bf16 products) and the gradient.
Results: bench/out/loss.json.
"""

from __future__ import annotations

import argparse
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

VOCAB, HIDDEN = 262_144, 640


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--positions", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto")
    args = ap.parse_args()

    import torch

    from core.models.loading import cpu_capability, cpu_has_native_bf16
    from finetune import loss

    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}.get(
        args.dtype, torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    torch.manual_seed(0)
    weight = (torch.randn(VOCAB, HIDDEN) * 0.02).to(dtype)
    hidden = torch.randn(args.positions, HIDDEN).to(dtype)
    targets = torch.randint(0, VOCAB, (args.positions,))
    shipped = loss.CHUNK_ELEMENTS

    def fused(chunk_elements: int):
        def run():
            loss.CHUNK_ELEMENTS = chunk_elements
            try:
                h = hidden.clone().requires_grad_(True)
                total = loss.fused_head_cross_entropy(h, weight, None, targets)
                total.backward()
                return total.item(), h.grad
            finally:
                loss.CHUNK_ELEMENTS = shipped
        return run

    def plain():
        h = hidden.clone().requires_grad_(True)
        logits = torch.nn.functional.linear(h, weight).float()
        total = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
        total.backward()
        return total.item(), h.grad

    ways = {"fused": fused(shipped), "fused-64": fused(64 * VOCAB), "plain": plain}
    times: dict[str, list[float]] = {name: [] for name in ways}
    results = {}
    for r in range(args.rounds):
        order = list(ways) if r % 2 == 0 else list(reversed(ways))
        for name in order:
            t0 = time.perf_counter()
            results[name] = ways[name]()
            times[name].append(time.perf_counter() - t0)
    ref_loss, ref_grad = results["plain"]
    for name, (value, grad) in results.items():
        assert abs(value - ref_loss) <= 1e-3 * abs(ref_loss), (name, value, ref_loss)
        assert torch.allclose(grad.float(), ref_grad.float(), atol=1e-2, rtol=1e-2), name
    med = {name: statistics.median(ts) for name, ts in times.items()}
    capability = cpu_capability()
    print(f"CPU capability {capability}, torch threads {torch.get_num_threads()}, "
          f"{str(dtype).replace('torch.', '')}, {args.positions} positions x {VOCAB:,} vocabulary, "
          f"{args.rounds} rounds (medians)")
    for name, s in med.items():
        print(f"  {name:9s} {s:7.2f} s  {1000 * s / args.positions:6.2f} ms/position")
    print(f"  fused/plain {med['fused'] / med['plain']:.2f}x, "
          f"fused/fused-64 {med['fused'] / med['fused-64']:.2f}x; losses and gradients agree")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "loss.json").write_text(json.dumps({
        "cpu_capability": capability, "dtype": str(dtype), "positions": args.positions,
        "vocab": VOCAB, "hidden": HIDDEN, "rounds": args.rounds,
        "chunk_elements": shipped, "median_s": med, "all_s": times,
        "ratio_fused_plain": med["fused"] / med["plain"],
        "ratio_fused_fused64": med["fused"] / med["fused-64"],
    }, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
