"""The human-readable parts of an adapter folder: loss.png and README.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compara.io import atomic_write_text, iter_jsonl


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
        "from compara.models import attach_adapter, load_base",
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
