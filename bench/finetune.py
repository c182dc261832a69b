"""Fine-tuning speed and memory: `compara finetune` vs a plain TRL SFTTrainer.

    python bench/finetune.py                                  # gemma3-270m, 4bit and none, 3 rounds
    python bench/finetune.py --model smollm2-135m --rounds 2 --steps 4
    python bench/finetune.py --data data/amostra              # another instruction set
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python bench/finetune.py   # a CPU without
                                                              # native bf16, simulated

Both arms train the same base model (loaded the same way: NF4 with double quantisation for
``4bit``, plain weights for ``none``; computing in the dtype compara chooses for this CPU: bf16
where the CPU has native bf16, else fp32 — printed at the start), on the same instruction records rendered
with the same template, with the same LoRA config (r=16, alpha=32, all linear layers), batch
size, max length, learning rate and number of steps, gradient checkpointing off in both.
The baseline is TRL's ``SFTTrainer`` with its defaults otherwise (prompt-completion data, so
the prompt is masked out of its loss too, and EOS appended to every completion; its bf16
autocast only where the model computes in bf16, since emulated bf16 would make it ~200x slower
and the comparison meaningless).

Each run is a fresh process (peak RSS is per process); the arms alternate within a round and
the order flips every round, so background load hits both alike. Train tokens/s is measured the
same way for both: non-padding input tokens of the training steps over the wall time of those
steps (evaluation, loading and saving excluded). Prints medians and the ratios ours/TRL;
results go to bench/out/finetune.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))
# Short-answer tasks, as in the demo config.
TASKS = ["definition", "infobox", "table", "passage_title"]


def _default_data() -> Path:
    from compara.config import load_config

    data = load_config().paths.data
    if data and (Path(data) / "instructions.train.jsonl").is_file():
        return Path(data)
    return ROOT / "tests" / "fixtures" / "instructions.jsonl"


# -- the workers (one run each, in a fresh process) ------------------------------------------

def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds, self.tokens, self._t, self._n = 0.0, 0, 0.0, 0
            self.losses = []

        def on_step_begin(self, args, state, control, **kw):
            self._t, self._n = time.perf_counter(), state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kw):
            self.seconds += time.perf_counter() - self._t
            self.tokens += state.num_input_tokens_seen - self._n

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    return StepTimer()


def _experiment(a):
    from compara.config import load_config

    return load_config(ROOT / "configs" / "sample.yaml", [
        f"model.base={a.model}", f"model.quantize={a.quantize}", "model.dtype=auto",
        f"finetune.max_steps={a.steps}", f"finetune.batch_size={a.batch}",
        f"finetune.max_length={a.max_length}", f"finetune.max_train_records={a.steps * a.batch}",
        "finetune.max_val_records=4", f"finetune.eval_steps={a.steps}", "finetune.stop_check=0",
        "finetune.warmup_ratio=0", f"finetune.tasks=[{','.join(TASKS)}]",
        # the records TRL gets too: chosen by task, no reading tasks (those need the index)
        "finetune.select=tasks", "finetune.reading=0",
        "finetune.gradient_checkpointing=false"])


def run_ours(a) -> dict:
    from finetune.train import run_finetune

    timer = _step_timer()
    out = Path(tempfile.mkdtemp(prefix="bench-ours-"))
    try:
        s = run_finetune(_experiment(a), a.data, out / "run", callbacks=[timer])
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"tokens": timer.tokens, "seconds": timer.seconds, "steps": s["steps"],
            "loss_first": timer.losses[0], "loss_last": timer.losses[-1]}


def run_trl(a) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from core.models import load_base
    from finetune.data import load_splits
    from finetune.train import load_template, lora_config

    cfg = _experiment(a)
    ft = cfg.finetune
    train, _, _ = load_splits(a.data, tasks=ft.tasks, max_train=ft.max_train_records)
    template = load_template(cfg, Path(a.data))
    rows = [dict(zip(("prompt", "completion"), template.render_record(r), strict=True))
            for r in train]
    loaded = load_base(cfg.model)  # the same from_pretrained + BitsAndBytesConfig as ours
    timer = _step_timer()
    out = Path(tempfile.mkdtemp(prefix="bench-trl-"))
    try:
        args = SFTConfig(
            output_dir=str(out), per_device_train_batch_size=ft.batch_size, max_steps=ft.max_steps,
            learning_rate=ft.lr, lr_scheduler_type=ft.lr_scheduler, max_length=ft.max_length,
            logging_steps=1, save_strategy="no", eval_strategy="no", report_to="none",
            use_cpu=loaded.info.device == "cpu", seed=ft.seed, data_seed=ft.seed,
            gradient_checkpointing=False, include_num_input_tokens_seen="non_padding",
            disable_tqdm=True, bf16=loaded.info.dtype == "bfloat16")
        trainer = SFTTrainer(model=loaded.model, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=loaded.tokenizer, peft_config=lora_config(ft),
                             callbacks=[timer])
        trainer.train()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"tokens": timer.tokens, "seconds": timer.seconds, "steps": trainer.state.global_step,
            "loss_first": timer.losses[0], "loss_last": timer.losses[-1]}


def worker(a) -> None:
    import torch

    torch.set_num_threads(a.threads)
    result = (run_ours if a.worker == "ours" else run_trl)(a)
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["tokens_per_second"] = round(result["tokens"] / result["seconds"], 1)
    print("RESULT " + json.dumps(result), flush=True)


# -- the driver -------------------------------------------------------------------------------

def run_one(a, arm: str, quantize: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", arm, "--quantize", quantize, "--model", a.model,
           "--steps", str(a.steps), "--batch", str(a.batch), "--max-length", str(a.max_length),
           "--threads", str(a.threads), "--data", str(a.data)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"{arm}/{quantize} failed (exit {proc.returncode})")
    return {"arm": arm, "quantize": quantize, **json.loads(line[len("RESULT "):])}


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gemma3-270m")
    p.add_argument("--quantize", default="4bit,none", help="comma-separated: 4bit, none")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    a = p.parse_args()
    a.data = a.data or _default_data()
    if a.worker:
        worker(a)
        return 0
    from core.models.convert import ensure_converted
    from core.models.registry import REGISTRY

    if a.model in REGISTRY:  # convert once, outside the timed runs
        ensure_converted(REGISTRY[a.model])
    quants = a.quantize.split(",")
    from core.models.loading import compute_plan

    plan = compute_plan(_experiment(a).model)
    print(f"model {a.model}, data {a.data}, {a.steps} steps x {a.batch} examples, "
          f"max_length {a.max_length}, {a.threads} threads, {a.rounds} rounds", flush=True)
    print(plan.replace("4-bit NF4 weights", "weights as --quantize says"), flush=True)
    runs = []
    for rnd in range(a.rounds):
        for q in quants:
            arms = ["ours", "trl"] if rnd % 2 == 0 else ["trl", "ours"]
            for arm in arms:
                r = run_one(a, arm, q)
                r.update(round=rnd, load=load_average())
                runs.append(r)
                print(f"  round {rnd} {q:>4} {arm:>4}: {r['tokens_per_second']:7.1f} tok/s, "
                      f"peak RSS {r['peak_rss_mib']:7.0f} MiB, loss {r['loss_first']:.3f} -> "
                      f"{r['loss_last']:.3f}, load {r['load']}", flush=True)
    summary = {}
    print(f"\n{'quantize':>8} {'arm':>5} {'tok/s (median)':>15} {'peak RSS MiB':>13}")
    for q in quants:
        med = {}
        for arm in ("ours", "trl"):
            rs = [r for r in runs if r["quantize"] == q and r["arm"] == arm]
            med[arm] = {"tokens_per_second": statistics.median(r["tokens_per_second"] for r in rs),
                        "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in rs)}
            print(f"{q:>8} {arm:>5} {med[arm]['tokens_per_second']:15.1f} "
                  f"{med[arm]['peak_rss_mib']:13.0f}")
        pairs = [(o, t) for o, t in zip(
            [r for r in runs if r["quantize"] == q and r["arm"] == "ours"],
            [r for r in runs if r["quantize"] == q and r["arm"] == "trl"], strict=True)]
        speed = statistics.median(o["tokens_per_second"] / t["tokens_per_second"] for o, t in pairs)
        memory = statistics.median(o["peak_rss_mib"] / t["peak_rss_mib"] for o, t in pairs)
        summary[q] = {**med, "speed_ratio": round(speed, 2), "memory_ratio": round(memory, 2)}
        print(f"{q:>8} ratio ours/TRL: {speed:.2f}x tokens/s, {memory:.2f}x peak RSS "
              "(median of per-round ratios)")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "finetune.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(a).items()}, "compute": plan, "runs": runs,
         "summary": summary},
        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
