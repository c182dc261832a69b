"""The comparison's cost: memory of four arms, speed of our answer path, batching, and
how the demo's batch answers under each weight format and with or without stop strings.

    python bench/compare.py                         # the demo's base model (gemma3-270m)
    python bench/compare.py --base smollm2-135m --repeats 5
    python bench/compare.py --only answers -s paths.data=/tmp/d -s paths.index=/tmp/i
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python bench/compare.py   # a CPU without
                                                    # native bf16, simulated

In one run, interleaved:

1. **Peak memory** (peak RSS, VmHWM, of a fresh process, medians over --repeats): the base model
   alone answering one question; the four-arm comparison (one base + the LoRA adapter switched
   on/off + the index) answering it through every arm; six arms (the four plus ``ft2`` and
   ``ft2+rag`` over a second, different adapter, given to the child as the config's ``arms:``
   list), where the child also checks that every arm answered through the same base weight
   storage and counts each adapter's LoRA parameters; and the design this product replaces,
   separate models per arm (the base, plus a second copy with the adapter merged in, plus the
   index). Goal: four and six arms <= 1.25x the base alone.
2. **Generation speed**: tokens/s of ``Comparison.answer`` vs calling ``model.generate``
   directly with the same prompt and settings (greedy, same max_new_tokens), alternating
   question by question. Goal: >= 0.95x.
3. **Batching**: answers/s and tokens/s over the same questions one at a time vs in batches.
4. **The demo's batch** (``--only answers``): the base and RAG arms over the same questions,
   up to 96 new tokens, interleaved: ``model.generate`` in batches of 4 with the template's
   marker as the only stop string, 4-bit weights unpacked at every step (how every answer was
   generated before) vs our continuous batching loop in batches of 12 with the line-break stop,
   with the 4-bit weights packed, unpacked once (the demo's settings now), and unquantised:
   answers/s, the ratio to before, and how the answers ended.

The compute line (device, CPU capability, dtype) is printed first and written with the results.

The adapter comes from the experiment's paths.adapter; when there is none, a short tune
(3 steps) is made into bench/out/ first. The second adapter of the six-arm child is always a
3-step tune of its own with another LoRA rank (finetune.lora_r=32), cached in bench/out/.
Results: bench/out/compare.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the compara command sets it
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))


SETS: list[str] = []  # -s overrides from the command line, for every config below


def _config(base: str, adapter: Path | None, threads: int, extra: tuple[str, ...] = ()):
    from compara.config import load_config

    sets = [f"model.base={base}", "model.quantize=none", "generation.max_new_tokens=48",
            f"generation.threads={threads}", "index.threads=1", *SETS, *extra]
    if adapter is not None:
        sets.append(f"paths.adapter={adapter}")
    return load_config(ROOT / "configs/sample.yaml", sets)


def _questions(n: int) -> list[str]:
    from core.questions import load_questions

    return [q.question for q in load_questions(ROOT / "questions/amostra.jsonl")][:n]


# A short tune: 3 steps, small eval split, no stop check after it (an adapter to measure
# memory with, not to answer well).
SHORT_TUNE = {"finetune.max_steps": 3, "finetune.eval_steps": 3, "finetune.max_val_records": 8,
              "finetune.stop_check": 0}


def ensure_adapter(base: str, threads: int) -> Path:
    cfg = _config(base, None, threads)
    if cfg.paths.adapter and (Path(cfg.paths.adapter) / "summary.json").exists():
        summary = json.loads((Path(cfg.paths.adapter) / "summary.json").read_text())
        if summary.get("base", {}).get("base") == base:
            return Path(cfg.paths.adapter)
    out = OUT / f"adapter-{base}"
    if not (out / "summary.json").exists():
        print(f"making a 3-step adapter of {base} in {out} ...", flush=True)
        from finetune.train import run_finetune

        run_finetune(cfg.with_overrides(SHORT_TUNE), Path(cfg.paths.data), out, force=True)
    return out


SECOND_RANK = 32  # the second adapter's LoRA rank (the first has finetune.lora_r, default 16)


def ensure_second_adapter(base: str, threads: int, first: Path) -> Path:
    """A second, different adapter of ``base`` for the six-arm child: a 3-step tune with
    ``finetune.lora_r`` = SECOND_RANK, cached in bench/out/."""
    from compara.comparison import adapter_hash

    out = OUT / f"adapter-{base}-r{SECOND_RANK}"
    summary = out / "summary.json"
    if not (summary.exists()
            and json.loads(summary.read_text()).get("base", {}).get("base") == base):
        print(f"making a 3-step adapter of {base} with LoRA rank {SECOND_RANK} in {out} ...",
              flush=True)
        from finetune.train import run_finetune

        cfg = _config(base, None, threads).with_overrides({
            **SHORT_TUNE, "finetune.lora_r": SECOND_RANK, "finetune.lora_alpha": 2 * SECOND_RANK})
        run_finetune(cfg, Path(cfg.paths.data), out, force=True)
    if adapter_hash(out) == adapter_hash(first):
        raise SystemExit(f"{out} and {first} hold the same adapter weights")
    return out


def six_arms(second: Path) -> list:
    """The four default arms plus two over ``second``: the config's ``arms:`` list."""
    from compara.arms import ArmConfig, default_arm_configs

    return [*default_arm_configs(), ArmConfig(name="ft2", adapter=str(second)),
            ArmConfig(name="ft2+rag", adapter=str(second), retrieval=True)]


def _arms_override(arms: list) -> str:
    """An ``arms=[...]`` override (-s) for the child: JSON is YAML."""
    return "arms=" + json.dumps([a.to_dict() for a in arms])


def _lora_layers(model) -> list:
    return [m for m in model.modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A")]


def shared_weights(comparison) -> dict:
    """Answer through every arm while a hook on the first LoRA layer records the storage of
    its base weight and which adapter is on; check that every arm used the same storage, each
    adapter arm its own adapter; count the parameters (base, and LoRA per adapter)."""
    model = comparison.loaded.model
    layer = _lora_layers(model)[0]
    seen: dict[str, dict] = {}
    current: list[str] = []

    def hook(module, args):
        seen.setdefault(current[0], {
            "base_weight_ptr": module.base_layer.weight.data_ptr(),
            "adapters_on": [] if module.disable_adapters else list(module.active_adapters)})

    handle = layer.register_forward_pre_hook(hook)
    question = _questions(1)[0]
    try:
        for arm in comparison.arms:
            current[:] = [arm]
            comparison.answer(arm, [question])
    finally:
        handle.remove()
    ptrs = {v["base_weight_ptr"] for v in seen.values()}
    assert len(seen) == len(comparison.arms), f"arms seen: {sorted(seen)}"
    assert len(ptrs) == 1, f"the base weight has {len(ptrs)} storages: {seen}"
    names = {a.name: comparison._peft_name(a) for a in comparison.all_arms.values()}
    for arm, state in seen.items():
        want = [names[arm]] if names[arm] else []
        assert state["adapters_on"] == want, f"arm {arm}: adapters on {state}, not {want}"
    adapters = sorted({n for n in names.values() if n})
    assert len(adapters) == 2, f"adapters loaded: {adapters}"
    lora = {n: 0 for n in adapters}
    base_params = base_storages = 0
    storages = set()
    for pname, p in model.named_parameters():
        if "lora_" in pname:
            owner = [n for n in adapters if f".{n}." in pname]
            assert len(owner) == 1, pname
            lora[owner[0]] += p.numel()
        else:
            base_params += p.numel()
            storages.add(p.untyped_storage().data_ptr())
    base_storages = len(storages)
    folders = {info.name: Path(info.path).name for info in comparison.loaded.adapters.values()}
    return {"layer": type(layer).__name__, "base_weight_ptr": ptrs.pop(), "arms": seen,
            "base_params": base_params, "base_parameter_storages": base_storages,
            "lora_params": {f"{n} ({folders[n]})": c for n, c in lora.items()},
            "lora_ranks": {f"{n} ({folders[n]})": layer.r[n] for n in adapters}}


# -- children (fresh processes, so max RSS is theirs alone) ----------------------------------

def child(kind: str, base: str, adapter: str, threads: int, sets: str = "[]") -> None:
    import torch

    torch.set_num_threads(threads)
    question = _questions(1)[0]
    SETS.extend(json.loads(sets))
    cfg = _config(base, Path(adapter), threads)
    extra: dict = {}
    if kind == "base":
        from compara.comparison import build_comparison

        comparison = build_comparison(cfg, ["base"])
        comparison.answer("base", [question])
    elif kind == "four":
        from compara.arms import DEFAULT_ARMS as ARMS
        from compara.comparison import build_comparison

        comparison = build_comparison(cfg, list(ARMS))
        for arm in ARMS:
            comparison.answer(arm, [question])
    elif kind == "six":
        # The config's arms: list (the -s arms=[...] override the parent passes): the four
        # arms and two over a second adapter, side by side on the same base weights.
        from compara.comparison import build_comparison

        names = [a.name for a in cfg.arms]
        assert len(names) == 6, f"six arms expected, the config has {names}"
        comparison = build_comparison(cfg, names)
        extra["params"] = shared_weights(comparison)  # answers through every arm
        print(json.dumps(extra["params"]), file=sys.stderr)
    elif kind == "separate":
        # One model per arm, as the research code did: the base, a second full copy with the
        # adapter merged in, and the index.
        from peft import PeftModel

        from compara.comparison import Comparison, build_comparison
        from core.models import load_base

        with_index = build_comparison(cfg, ["base", "rag"])
        tuned = load_base(cfg.model)
        tuned.model = PeftModel.from_pretrained(tuned.model, adapter).merge_and_unload()
        second = Comparison(tuned, cfg.generation, with_index.template, index=with_index.index,
                            retrieval=cfg.retrieval)
        for comp, arm in ((with_index, "base"), (with_index, "rag"), (second, "base"),
                          (second, "rag")):
            comp.answer(arm, [question])
    print(json.dumps({"max_rss_mb": peak_rss_mb(), **extra}))


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM of its own address space. (``ru_maxrss`` is not: on
    Linux a process started by fork/vfork + exec keeps its parent's peak at the exec in it, so
    a child of a parent that grew large, e.g. by training the adapters, reads the parent's.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory(base: str, adapter: Path, threads: int, repeats: int, second: Path) -> dict:
    kinds = ["base", "four", "six", "separate"]
    rss: dict[str, list[float]] = {k: [] for k in kinds}
    params = None
    for r in range(repeats):
        for kind in kinds:
            sets = [*SETS, _arms_override(six_arms(second))] if kind == "six" else SETS
            done = subprocess.run([sys.executable, __file__, "--child", kind, "--base", base,
                                   "--adapter", str(adapter), "--threads", str(threads),
                                   "--child-sets", json.dumps(sets)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"child {kind} failed:\n{done.stderr[-3000:]}")
            got = json.loads(done.stdout.strip().splitlines()[-1])
            rss[kind].append(got["max_rss_mb"])
            print(f"  round {r + 1}: {kind:9s} peak RSS {rss[kind][-1]:8.0f} MB", flush=True)
            if kind == "six" and params is None:
                params = got["params"]
                lora = ", ".join(f"{n}: {c:,} (rank {params['lora_ranks'][n]})"
                                 for n, c in params["lora_params"].items())
                print(f"    six arms: one base weight storage (data_ptr {params['base_weight_ptr']:#x} "
                      f"of the {params['layer']} layer's base weight, the same in all six arms); "
                      f"base {params['base_params']:,} parameters in "
                      f"{params['base_parameter_storages']} storages; LoRA parameters {lora}",
                      flush=True)
    med = {k: statistics.median(v) for k, v in rss.items()}
    return {"peak_rss_mb": rss, "median_mb": med, "four_over_base": med["four"] / med["base"],
            "six_over_base": med["six"] / med["base"],
            "separate_over_base": med["separate"] / med["base"], "six_params": params,
            "second_adapter": str(second), "load": os.getloadavg()}


def speed(base: str, adapter: Path, threads: int, n: int) -> dict:
    import torch

    from compara.comparison import build_comparison

    torch.set_num_threads(threads)
    cfg = _config(base, adapter, threads)
    comparison = build_comparison(cfg, ["base"])
    model, tok = comparison.loaded.model, comparison.loaded.tokenizer
    questions = _questions(n)
    ours, raw = [], []
    comparison.answer("base", questions[:1])  # warm-up
    for q in questions:
        a = comparison.answer("base", [q])[0]
        ours.append(a.tokens_out / a.latency_s)
        prompt = comparison.prepare("base", q).prompt
        enc = tok([prompt], return_tensors="pt")
        t0 = time.perf_counter()
        stops = ({"stop_strings": comparison.stop_strings, "tokenizer": tok}
                 if comparison.stop_strings else {})
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=cfg.generation.max_new_tokens,
                                 do_sample=False, pad_token_id=tok.pad_token_id, **stops)
        elapsed = time.perf_counter() - t0
        new = out.shape[1] - enc["input_ids"].shape[1]
        raw.append(new / elapsed)
    ratio = statistics.median(ours) / statistics.median(raw)
    # batching: the same questions one at a time and in batches of 8
    seq = comparison.decoding.replace(batch_size=1)
    bat = comparison.decoding.replace(batch_size=8)
    results = {}
    for name, decoding in (("sequential", seq), ("batched (8)", bat), ("sequential ", seq),
                           ("batched (8) ", bat)):
        comparison.decoding = decoding
        t0 = time.perf_counter()
        answers = comparison.answer("base", questions)
        elapsed = time.perf_counter() - t0
        results.setdefault(name.strip(), []).append(
            {"s": elapsed, "answers_per_s": len(answers) / elapsed,
             "tokens_per_s": sum(a.tokens_out for a in answers) / elapsed})
    batching = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in results.items()}
    return {"tokens_per_s": {"ours": ours, "model.generate": raw},
            "median_tokens_per_s": {"ours": statistics.median(ours), "model.generate": statistics.median(raw)},
            "ours_over_generate": ratio, "batching": batching,
            "batching_speedup": batching["batched (8)"]["answers_per_s"] / batching["sequential"]["answers_per_s"]}


# (label, weights, continuous batching, line-break stop, batch size): the behaviour before
# this product's own decoding loop (model.generate in batches of 4, the template's marker as
# the only stop), the demo's settings now, and the same unquantised.
CASES = (("before: generate x4, marker", "4bit-packed", False, False, 4),
         ("continuous x12, marker + line break, packed", "4bit-packed", True, True, 12),
         ("now: the same, 4-bit unpacked once", "4bit", True, True, 12),
         ("now, unquantised", "none", True, True, 12))
WEIGHTS = {"4bit-packed": {"model.quantize": "4bit", "model.unpack_4bit_on_cpu": False},
           "4bit": {"model.quantize": "4bit", "model.unpack_4bit_on_cpu": True},
           "none": {"model.quantize": "none"}}


def _cpu_seconds() -> float:
    """This process's CPU time: the work done, steadier than wall time on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def answers(base: str, threads: int, n: int, rounds: int) -> dict:
    """The demo's batch on the base and RAG arms under each of CASES, interleaved (each round
    flips the order of the weight formats and of the cases); medians over the rounds of wall
    and CPU seconds. "before" goes through ``model.generate`` batch by batch, the way every
    answer was generated before the continuous batching loop (``core.continuous``)."""
    import gc

    import torch

    import core.continuous as continuous
    from compara.comparison import build_comparison

    torch.set_num_threads(threads)
    demo = _config(base, None, threads, ("generation.max_new_tokens=96",))
    questions = _questions(n)
    runs: list[dict] = []
    supported = continuous.supported
    for rnd in range(rounds):
        quants = list(WEIGHTS) if rnd % 2 == 0 else list(WEIGHTS)[::-1]
        for quant in quants:
            cases = [c for c in CASES if c[1] == quant]
            cfg = demo.with_overrides({**WEIGHTS[quant],
                                       "generation.max_new_tokens": demo.generation.max_new_tokens})
            cfg.paths = demo.paths
            comparison = build_comparison(cfg, ["base", "rag"])
            comparison.answer("base", questions[:1])  # warm-up
            for label, _, cont, line_break, size in (cases if rnd % 2 == 0 else cases[::-1]):
                continuous.supported = supported if cont else (lambda *a: False)
                view = comparison.with_settings(decoding=cfg.generation.replace(
                    stop_at_line_break=line_break, batch_size=size))
                for arm in ("base", "rag"):
                    t0, c0 = time.perf_counter(), _cpu_seconds()
                    got = view.answer(arm, questions)
                    s, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
                    ends = {r: sum(a.finish_reason == r for a in got)
                            for r in ("eos", "stop_string", "max_tokens")}
                    runs.append({"round": rnd, "case": label, "arm": arm, "s": s, "cpu_s": cpu,
                                 "load": os.getloadavg()[0], "answers_per_s": len(got) / s,
                                 "tokens_out": sum(a.tokens_out for a in got),
                                 "prefill_tokens": sum(a.tokens_in for a in got), **ends})
                    print(f"  round {rnd + 1} {label:42s} {arm:4s}: {s:6.1f} s ({cpu:6.1f} CPU "
                          f"s, load {runs[-1]['load']:.1f}), {len(got) / s:.2f} answers/s, "
                          f"{runs[-1]['tokens_out']} tokens out, ended {ends}", flush=True)
                continuous.supported = supported
            del comparison, view
            gc.collect()
    table = {}
    for label, *_ in CASES:
        rows = [r for r in runs if r["case"] == label]
        per_round: dict[int, list[dict]] = {}
        for r in rows:
            per_round.setdefault(r["round"], []).append(r)
        wall = statistics.median(sum(x["s"] for x in rs) for rs in per_round.values())
        cpu = statistics.median(sum(x["cpu_s"] for x in rs) for rs in per_round.values())
        count = len(questions) * 2
        ended = {arm: sum(r["eos"] + r["stop_string"] for r in rows if r["arm"] == arm)
                 / sum(r["eos"] + r["stop_string"] + r["max_tokens"] for r in rows
                       if r["arm"] == arm) for arm in ("base", "rag")}
        table[label] = {
            "s": wall, "cpu_s": cpu, "answers_per_s": count / wall,
            "answers_per_cpu_s": count / cpu, "ended_cleanly": ended,
            "tokens_out": statistics.median(
                sum(x["tokens_out"] for x in rs) for rs in per_round.values())}
    before = table[CASES[0][0]]["answers_per_s"]
    for row in table.values():
        row["vs_before"] = row["answers_per_s"] / before
    return {"questions": len(questions), "runs": runs, "table": table}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="gemma3-270m")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="memory,speed,answers",
                    help="comma-separated sections: memory, speed, answers")
    ap.add_argument("--set", "-s", action="append", default=[],
                    help="config override for every run (e.g. paths.index=...)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-sets", default="[]", help=argparse.SUPPRESS)
    ap.add_argument("--adapter", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.base, args.adapter, args.threads, args.child_sets)
        return 0
    SETS.extend(args.set)
    sections = set(args.only.split(","))
    OUT.mkdir(parents=True, exist_ok=True)
    from core.models.loading import compute_plan

    plan = compute_plan(_config(args.base, None, args.threads).model)
    print(f"{plan.replace('unquantised weights', 'weights as each section says')}", flush=True)
    results: dict = {"base": args.base, "compute": plan}
    if "answers" in sections:
        print(f"the demo's batch, {args.questions} questions x base and rag, "
              f"{args.repeats} round(s):", flush=True)
        ans = answers(args.base, args.threads, args.questions, args.repeats)
        before = ans["table"][CASES[0][0]]
        for name, row in ans["table"].items():
            print(f"  {name:42s} {row['s']:7.1f} s {row['cpu_s']:7.1f} CPU s "
                  f"{row['tokens_out']:6.0f} tokens out  {row['answers_per_s']:.3f} answers/s "
                  f"({row['answers_per_s'] / before['answers_per_s']:.2f}x), per CPU second "
                  f"{row['answers_per_cpu_s'] / before['answers_per_cpu_s']:.2f}x; ended cleanly "
                  f"base {row['ended_cleanly']['base']:.0%}, rag {row['ended_cleanly']['rag']:.0%}")
        results["answers"] = ans
    if not sections & {"memory", "speed"}:
        (OUT / "compare.json").write_text(json.dumps(results, indent=2))
        print(f"wrote {OUT / 'compare.json'}")
        return 0
    adapter = ensure_adapter(args.base, args.threads)
    print(f"base {args.base}, adapter {adapter}, {args.threads} thread(s)", flush=True)
    if "memory" in sections:
        second = ensure_second_adapter(args.base, args.threads, adapter)
        print(f"second adapter (arms ft2, ft2+rag) {second}", flush=True)
        mem = results["memory"] = memory(args.base, adapter, args.threads, args.repeats, second)
        print(f"\npeak RSS medians: base alone {mem['median_mb']['base']:.0f} MB, four arms "
              f"{mem['median_mb']['four']:.0f} MB ({mem['four_over_base']:.2f}x), six arms "
              f"{mem['median_mb']['six']:.0f} MB ({mem['six_over_base']:.2f}x), separate models "
              f"{mem['median_mb']['separate']:.0f} MB ({mem['separate_over_base']:.2f}x); "
              f"load average {' '.join(f'{x:.2f}' for x in mem['load'])}")
    if "speed" in sections:
        spd = results["speed"] = speed(args.base, adapter, args.threads, args.questions)
        print(f"generation: ours {spd['median_tokens_per_s']['ours']:.1f} tok/s, model.generate "
              f"{spd['median_tokens_per_s']['model.generate']:.1f} tok/s "
              f"({spd['ours_over_generate']:.2f}x)")
        for name, row in spd["batching"].items():
            print(f"  {name:12s} {row['answers_per_s']:.2f} answers/s "
                  f"{row['tokens_per_s']:.1f} tok/s")
        print(f"batching speed-up: {spd['batching_speedup']:.2f}x")
    (OUT / "compare.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {OUT / 'compare.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
