"""What a run records: metrics.jsonl (with the progress bar), summary.json, loss.png, README.md."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

from core.io import JsonlAppender, atomic_write_text, iter_jsonl

METRICS = "metrics.jsonl"


def plot_losses(metrics: Path, dest: Path, title: str = "") -> Path | None:
    """Train loss per step and eval loss per eval, from metrics.jsonl."""
    if not metrics.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, evals = [], []
    for _, rec in iter_jsonl(metrics, on_error=lambda bad: None):
        if rec.get("kind") == "train":
            train.append((rec["step"], rec["loss"]))
        elif rec.get("kind") == "eval":
            evals.append((rec["step"], rec["eval_loss"]))
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="#4c78a8", linewidth=1)
    if evals:
        ax.plot(*zip(*evals, strict=True), label="eval loss (val split)", color="#e45756",
                marker="o", linewidth=2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy on response tokens")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = dest.with_name(f".{dest.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(dest)
    return dest


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "—" if value is None else format(value, spec)


def write_readme(out: Path, s: dict[str, Any]) -> None:
    base = s["base"]
    stop = s.get("stop_check") or {}
    lines = [
        f"# LoRA adapter for `{base['base']}`",
        "",
        f"Trained by `compara finetune` on {s['data']['used']['train']} instruction records "
        f"({s['data']['source']}); {s['steps']} steps, {s['epochs']} epochs, "
        f"{s['quantize']} base weights.",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{base['base']}` ({base['architecture']}, fingerprint "
        f"`{base['fingerprint']}`) |",
        f"| eval loss | {_fmt(s['eval_loss_start'])} at start → {_fmt(s['eval_loss_best'])} best |",
        f"| adapter kept | {s['adapter']['kept']} ({s['adapter']['from_checkpoint']}) |",
        f"| prompt template | `{s['template']['name']}` ({s['template']['fingerprint']}) |",
        f"| train tokens/s | {s['train_tokens_per_second']} |",
        f"| peak memory | {s['peak_rss_mib']} MiB RSS |",
    ]
    if stop:
        ft, bs = stop["finetuned"], stop["base"]
        lines.append(f"| stops on EOS (training prompts) | {ft['stopped']}/{ft['n']} fine-tuned, "
                     f"{bs['stopped']}/{bs['n']} base |")
    lines += [
        "",
        "Use it on the same base model (a different base is refused):",
        "",
        "```python",
        "from compara.config import load_config",
        "from core.models import attach_adapter, load_base",
        "",
        f"loaded = load_base(load_config('{out / 'config.yaml'}').model)",
        f"tuned = attach_adapter(loaded, '{out}')",
        "prompt = tuned.adapter.template.render('Quem foi Tiradentes?')",
        "```",
        "",
        "Files: the adapter (`adapter_model.safetensors`, `adapter_config.json`), the prompt "
        "template it was trained with (`prompt_template.json`), the tokenizer, the resolved "
        "config (`config.yaml`), `metrics.jsonl`, `loss.png`, `summary.json`, and the best and "
        "last checkpoints under `checkpoints/` (for `--resume`).",
        "",
    ]
    atomic_write_text(out / "README.md", "\n".join(lines))


def library_versions() -> dict[str, str]:
    from core.versions import library_versions as versions

    return versions(("compara", "torch", "transformers", "peft", "bitsandbytes", "accelerate",
                     "tokenizers"))


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (and peak CUDA memory), in MiB."""
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":  # bytes there
        rss_kib /= 1024
    out = {"peak_rss_mib": round(rss_kib / 1024, 1)}
    import torch

    if torch.cuda.is_available():
        out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def metrics_callback(out: Path):
    from transformers import TrainerCallback

    from core.logs import progress

    class MetricsCallback(TrainerCallback):
        """metrics.jsonl (one line per log/eval, flushed at once) and a progress bar with
        loss, tokens/s and ETA. Only the main process writes."""

        def __init__(self):
            self.bar = None
            self.writer = None
            self.step_time = 0.0
            self.step_tokens = 0
            self._t0 = 0.0
            self._tok0 = 0
            self.last_loss = None
            self.evals: list[tuple[int, float]] = []

        def on_train_begin(self, args, state, control, **kw):
            if state.is_world_process_zero:
                self.writer = JsonlAppender(out / METRICS)
                self.bar = progress(total=state.max_steps, initial=state.global_step,
                                    desc="fine-tuning", unit="step")

        def on_step_begin(self, args, state, control, **kw):
            self._t0 = time.perf_counter()
            self._tok0 = state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kw):
            dt = time.perf_counter() - self._t0
            self.step_time += dt
            self.step_tokens += state.num_input_tokens_seen - self._tok0
            if self.bar is not None:
                self.bar.update(1)
                post = {"tok/s": f"{self.tokens_per_second:.0f}"}
                if self.last_loss is not None:
                    post["loss"] = f"{self.last_loss:.3f}"
                self.bar.set_postfix(post, refresh=False)

        @property
        def tokens_per_second(self) -> float:
            return self.step_tokens / self.step_time if self.step_time else 0.0

        def on_log(self, args, state, control, logs=None, **kw):
            if not state.is_world_process_zero or not logs:
                return
            rec: dict[str, Any] = {"step": state.global_step,
                                   "epoch": round(state.epoch or 0.0, 4)}
            if "eval_loss" in logs:
                rec.update(kind="eval", eval_loss=logs["eval_loss"],
                           seconds=logs.get("eval_runtime"))
                self.evals.append((state.global_step, logs["eval_loss"]))
                if self.bar is not None:
                    self.bar.write(f"step {state.global_step}: eval loss {logs['eval_loss']:.4f}")
            elif "loss" in logs:
                self.last_loss = logs["loss"]
                rec.update(kind="train", loss=logs["loss"], lr=logs.get("learning_rate"),
                           grad_norm=logs.get("grad_norm"), tokens=state.num_input_tokens_seen,
                           tokens_per_second=round(self.tokens_per_second, 1))
            else:
                return
            if self.writer is None:  # evaluate() before train(): write directly
                with JsonlAppender(out / METRICS) as w:
                    w.write(rec)
            else:
                self.writer.write(rec)

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.close()
            if self.writer is not None:
                self.writer.close()

    return MetricsCallback()


def build_summary(cfg, prepared, trainer, data: Path, out: Path, state, result,
             train_seconds: float, elapsed: float, resumed_step: int, best, last, chosen,
             metrics_cb, stop) -> dict[str, Any]:
    evals = [rec for _, rec in iter_jsonl(out / METRICS, on_error=lambda b: None)
             if rec.get("kind") == "eval"] if (out / METRICS).is_file() else []
    trains = [rec for _, rec in iter_jsonl(out / METRICS, on_error=lambda b: None)
              if rec.get("kind") == "train"] if (out / METRICS).is_file() else []
    trainable, total = prepared.loaded.model.get_nb_trainable_parameters()
    info = prepared.loaded.info.to_dict()
    return {
        "base": info,
        "adapter": {"kept": cfg.finetune.keep, "from_checkpoint": chosen.name if chosen else None,
                    "trainable_parameters": trainable, "total_parameters": total,
                    "lora_r": cfg.finetune.lora_r, "lora_alpha": cfg.finetune.lora_alpha,
                    "lora_dropout": cfg.finetune.lora_dropout,
                    "target_modules": cfg.finetune.target_modules},
        "quantize": cfg.model.quantize,
        "template": {"name": prepared.template.name,
                     "fingerprint": prepared.template.fingerprint},
        "data": {"source": str(data), **prepared.report.to_dict()},
        "steps": state.global_step, "max_steps": state.max_steps,
        "epochs": round(state.epoch or 0.0, 4), "resumed_from_step": resumed_step,
        "train_loss_first": trains[0]["loss"] if trains else None,
        "train_loss_last": trains[-1]["loss"] if trains else None,
        "eval_loss_start": evals[0]["eval_loss"] if evals else None,
        "eval_loss_best": state.best_metric,
        "eval_loss_final": evals[-1]["eval_loss"] if evals else None,
        "best_checkpoint": Path(best).name if best else None,
        "last_checkpoint": last.name if last else None,
        "elapsed_seconds": round(elapsed, 1), "train_seconds": round(train_seconds, 1),
        "train_tokens": state.num_input_tokens_seen,
        "train_tokens_per_second": round(metrics_cb.tokens_per_second, 1),
        **peak_memory(),
        "stop_check": stop,
        "versions": library_versions(),
        "world_size": trainer.args.world_size,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
