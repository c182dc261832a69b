"""Ingest speed and output cleanliness: compara ingest vs wikiextractor vs bzcat (the floor).

    python bench/ingest.py                  # 20,000+ pages, 3 rounds, workers 1 and 2
    python bench/ingest.py --pages 5000 --rounds 1
    python bench/ingest.py --pages 3000 --workers 1 --baseline /tmp/old-checkout   # before/after
    python bench/ingest.py --scale --pages 1000000 --redirect-share 0.55 --workers 2  # full scale

Builds a large dump by replicating the shipped sample with unique titles and ids (compressed
.xml.bz2, like ptwiki's), then times, interleaved round by round so that background load hits
every tool alike:

* ``bzcat`` alone — reading the compressed dump is the floor no extractor can beat;
* ``compara ingest`` with 1 and 2 worker processes: the whole command (clean articles,
  redirects and the instruction set), and with the instruction set turned off (articles only:
  the same job as wikiextractor's), and the whole command with the reading process only reading
  (``ingest.reader_cleans=false``: it does not clean batches while the workers are busy);
* wikiextractor 3.1.0 with ``--processes`` 1 and 2 and ``--no-templates``, installed into a
  venv of its own under bench/out/ (it is not a dependency of compara).

Prints pages/s, MB/s (decompressed XML), the ratios ours/wikiextractor and ours/floor (medians
over the rounds), and the markup left in each tool's text, counted by ingest/leaks.py (every
article's text, section headings and infobox values for compara); the script fails (exit 1)
when compara's text holds any. Results: bench/out/ingest.json.

``--baseline DIR`` times another checkout's ``compara ingest`` (run from DIR, on the same dump,
interleaved) beside this one: before/after figures from one run. ``--redirect-share`` adds
redirect pages to each copy of the sample until that share of the pages are redirects (real
ptwiki: ~55%; the sample alone: ~20%). ``--scale`` runs the whole ``compara ingest`` once on
such a dump (no peers) and records wall and CPU time, the peak RSS of its largest process and of
all its processes together (sampled), and the sizes of what it wrote
(bench/out/ingest-scale-PAGES.json); the outputs are deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import bz2
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path, and this file (ingest.py) would
# shadow the ingest package that counts the markup.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
OUT = ROOT / "bench" / "out"
SAMPLE = ROOT / "data/sample/ptwiki-amostra-pages-articles.xml"
WIKIEXTRACTOR = "wikiextractor==3.1.0"

# Beside ingest/leaks.py's kinds: what a dropped template leaves when it is not rendered.
EMPTY_PARENS = re.compile(r"\(\s*[,;]?\s*\)")


def _copy_of(block: str, k: int) -> str:
    """The k-th copy of a <page> block: a new title, id, and redirect target."""
    block = re.sub(r"<title>(.*?)</title>", lambda m: f"<title>{m.group(1)} {k}</title>", block, count=1)
    block = re.sub(r"(<page>\s*<title>.*?</title>\s*<ns>\d+</ns>\s*<id>)(\d+)",
                   lambda m: f"{m.group(1)}{int(m.group(2)) + 100_000 * k}", block, count=1)
    block = re.sub(r'<redirect title="(.*?)" />', lambda m: f'<redirect title="{m.group(1)} {k}" />', block)
    return re.sub(r"(#REDIRECIONAMENTO|#REDIRECT|#redirecionamento)\s*\[\[([^\]|#]+)",
                  lambda m: f"{m.group(1)} [[{m.group(2)} {k}", block)


_REDIRECT_PAGE = """  <page>
    <title>{title}</title>
    <ns>0</ns>
    <id>{id}</id>
    <redirect title="{target}" />
    <revision>
      <id>{id}</id>
      <timestamp>2024-01-02T18:07:00Z</timestamp>
      <model>wikitext</model>
      <format>text/x-wiki</format>
      <text bytes="{size}" xml:space="preserve">#REDIRECIONAMENTO [[{target}]]</text>
    </revision>
  </page>
"""


def _extra_redirects(page_blocks: list[str], share: float | None) -> list[str]:
    """Redirect pages to add to each copy of the sample so that ``share`` of all pages are
    redirects (to the sample's articles, round robin; titles "T (variante j)")."""
    if not share:
        return []
    redirects = sum('<redirect title="' in b for b in page_blocks)
    extra = max(0, round((share * len(page_blocks) - redirects) / (1 - share)))
    targets = [m.group(1) for b in page_blocks if '<redirect title="' not in b
               and "<ns>0</ns>" in b and (m := re.search(r"<title>(.*?)</title>", b))]
    out = []
    for j in range(extra):
        target = targets[j % len(targets)]
        text = f"#REDIRECIONAMENTO [[{target}]]"
        out.append(_REDIRECT_PAGE.format(title=f"{target} (variante {j})", id=50_000 + j,
                                         target=target, size=len(text.encode())))
    return out


def build_dump(pages: int, path: Path, redirect_share: float | None = None) -> tuple[int, int]:
    """Replicate the sample's pages with unique titles/ids until ``pages`` (with
    ``redirect_share``: plus redirect pages, see _extra_redirects); returns (pages written,
    decompressed bytes)."""
    xml = SAMPLE.read_text(encoding="utf-8")
    head, _, rest = xml.partition("  <page>")
    body = "  <page>" + rest.rsplit("</mediawiki>", 1)[0]
    page_blocks = re.findall(r"  <page>.*?</page>\n", body, flags=re.DOTALL)
    page_blocks += _extra_redirects(page_blocks, redirect_share)
    copies = -(-pages // len(page_blocks))
    written = 0
    size = 0
    with bz2.open(path, "wt", encoding="utf-8", compresslevel=6) as fh:
        fh.write(head)
        size += len(head.encode())
        for k in range(copies):
            for block in page_blocks:
                if k:
                    block = _copy_of(block, k)
                fh.write(block)
                size += len(block.encode())
                written += 1
        fh.write("</mediawiki>\n")
    return written, size


def ensure_wikiextractor() -> Path:
    venv = OUT / "wxvenv"
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"installing {WIKIEXTRACTOR} into {venv} (benchmark only) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        WIKIEXTRACTOR], check=True)
    return python


def timed(cmd: list[str] | str, shell: bool = False, cwd: Path | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and all its processes)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          cwd=cwd)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {cmd}\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def ours_texts(folder: Path) -> list[tuple[str, str]]:
    """(title, text) for every text of every article: body, section headings, infobox values."""
    from ingest.leaks import article_texts

    out = []
    with open(folder / "articles.jsonl", encoding="utf-8") as fh:
        for line in fh:
            art = json.loads(line)
            out += [(art["title"], text) for _, text in article_texts(art)]
    return out


def wikiextractor_texts(folder: Path) -> list[tuple[str, str]]:
    out = []
    for path in sorted(folder.rglob("wiki_*")):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                doc = json.loads(line)
                if doc.get("text", "").strip():
                    out.append((doc.get("title", ""), doc["text"]))
    return out


def leftovers(texts: list[tuple[str, str]]) -> tuple[dict[str, int], list[str]]:
    """Markup left per kind (ingest/leaks.py, the same counter the tests use), and a few
    examples naming their page."""
    from ingest.leaks import LEAK_PATTERNS, count_leaks, find_leaks

    counts = dict.fromkeys([*LEAK_PATTERNS, "empty parentheses ()"], 0)
    examples: list[str] = []
    for title, text in texts:
        for kind, n in count_leaks(text).items():
            counts[kind] += n
        counts["empty parentheses ()"] += len(EMPTY_PARENS.findall(text))
        if len(examples) < 5:
            examples += [f"{title}: {leak.kind}: {leak.snippet!r}" for leak in find_leaks(text)[:2]]
    return counts, examples


def scale_run(dump: Path, n_pages: int, xml_bytes: int, workers: int, keep: bool) -> int:
    """One whole ``compara ingest`` of ``dump``: time, CPU, peak RSS (largest process, and all
    its processes together, sampled every 0.5 s), output sizes."""
    import threading

    import psutil

    out = OUT / f"scale-{n_pages}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "compara", "-q", "ingest", str(dump), "--out", str(out),
           "--workers", str(workers)]
    print("running:", " ".join(cmd), flush=True)
    load_before = os.getloadavg()
    peak = {"total": 0, "samples": []}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.append(proc.stderr.read()), daemon=True)
    reader.start()
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            total = sum(p.memory_info().rss for p in procs)
        except psutil.Error:
            total = 0
        peak["total"] = max(peak["total"], total)
        elapsed = time.perf_counter() - t0
        if not peak["samples"] or elapsed - peak["samples"][-1][0] >= 60:
            peak["samples"].append((round(elapsed), round(total / 2**20)))
            print(f"  {elapsed:7.0f} s  RSS of all processes {total / 2**20:8.0f} MiB", flush=True)
        time.sleep(0.5)
    wall = time.perf_counter() - t0
    reader.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {cmd}\n{''.join(stderr)[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    report = json.loads((out / "ingest_report.json").read_text())
    sizes = {f.name: f.stat().st_size for f in out.iterdir()}
    result = {
        "pages": n_pages, "xml_bytes": xml_bytes, "workers": workers, "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1), "pages_per_s": round(n_pages / wall, 1),
        # ru_maxrss of the children: the largest of the processes (KiB on Linux)
        "peak_rss_largest_process_mib": round(after.ru_maxrss / 1024),
        "peak_rss_all_processes_mib": round(peak["total"] / 2**20), "rss_samples_mib": peak["samples"],
        "articles": report["articles"], "redirects": report["redirects"],
        "instruction_records": report["instructions"]["train"] + report["instructions"]["val"],
        "duplicates_removed": report["instructions"]["duplicates_removed"],
        "output_bytes": sizes, "cpu_capability": cpu_capability(),
        "load_average": {"before": [round(x, 2) for x in load_before],
                         "after": [round(x, 2) for x in os.getloadavg()]},
    }
    path = OUT / f"ingest-scale-{n_pages}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "rss_samples_mib"}, indent=2))
    print(f"wrote {path}")
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return 0


def cpu_capability() -> str:
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except Exception as exc:  # the figure is informative only
        return f"unknown ({type(exc).__name__})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", default="1,2", help="process counts to compare (default 1,2)")
    ap.add_argument("--redirect-share", type=float, default=None,
                    help="add redirect pages until this share of the pages are redirects (ptwiki: 0.55)")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another checkout whose compara ingest is timed beside this one's")
    ap.add_argument("--scale", action="store_true",
                    help="one whole compara ingest with peak RSS, no peers (see the module doc)")
    ap.add_argument("--keep", action="store_true", help="with --scale: keep the outputs")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    share = f"-r{round(args.redirect_share * 100)}" if args.redirect_share else ""
    dump = OUT / f"bench-{args.pages}{share}.xml.bz2"
    if not dump.exists() or dump.stat().st_mtime < SAMPLE.stat().st_mtime:  # the sample changed
        print(f"building {dump.name} ...", flush=True)
        n_pages, xml_bytes = build_dump(args.pages, dump, args.redirect_share)
        (OUT / f"{dump.name}.json").write_text(json.dumps({"pages": n_pages, "xml_bytes": xml_bytes}))
    meta = json.loads((OUT / f"{dump.name}.json").read_text())
    n_pages, xml_bytes = meta["pages"], meta["xml_bytes"]
    workers = [int(w) for w in args.workers.split(",")]
    if args.scale:
        return scale_run(dump, n_pages, xml_bytes, workers[0], args.keep)
    wx_python = ensure_wikiextractor()
    print(f"dump: {n_pages:,} pages, {xml_bytes / 1e6:.1f} MB of XML ({dump.stat().st_size / 1e6:.1f} MB bz2); "
          f"{args.rounds} round(s), interleaved", flush=True)

    tools: dict[str, list[str] | str] = {"bzcat (floor)": f"bzcat {dump} > /dev/null"}
    for w in workers:
        tools[f"compara ingest, {w} worker(s)"] = [
            sys.executable, "-m", "compara", "-q", "ingest", str(dump), "--out", str(OUT / f"ours-{w}"),
            "--workers", str(w)]
        tools[f"compara ingest, {w} worker(s), reader only reads"] = [
            sys.executable, "-m", "compara", "-q", "ingest", str(dump), "--out", str(OUT / f"ours-r-{w}"),
            "--workers", str(w), "-s", "ingest.reader_cleans=false"]
        if args.baseline:
            tools[f"baseline compara ingest, {w} worker(s)"] = [
                sys.executable, "-m", "compara", "-q", "ingest", str(dump), "--out",
                str(OUT / f"base-{w}"), "--workers", str(w)]
        tools[f"compara, articles only, {w} worker(s)"] = [
            sys.executable, "-m", "compara", "-q", "ingest", str(dump), "--out", str(OUT / f"ours-a-{w}"),
            "--workers", str(w), "-s", "ingest.instructions.tasks=[]"]
        tools[f"wikiextractor, {w} process(es)"] = [
            str(wx_python), "-m", "wikiextractor.WikiExtractor", str(dump), "-o", str(OUT / f"wx-{w}"),
            "--processes", str(w), "--no-templates", "--json", "-q"]
    load_before = os.getloadavg()[0]  # above 1 on this 2-core machine: another job shares it
    times: dict[str, list[float]] = {name: [] for name in tools}
    cpus: dict[str, list[float]] = {name: [] for name in tools}
    for r in range(args.rounds):
        for name, cmd in tools.items():
            if "wikiextractor" in name:
                subprocess.run(["rm", "-rf", cmd[cmd.index("-o") + 1]])
            cwd = args.baseline if name.startswith("baseline") else None
            wall, cpu = timed(cmd, shell=isinstance(cmd, str), cwd=cwd)
            times[name].append(wall)
            cpus[name].append(cpu)
            print(f"  round {r + 1}: {name:44s} {wall:7.2f} s wall {cpu:7.2f} s CPU", flush=True)

    load = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    med = {name: statistics.median(ts) for name, ts in times.items()}
    med_cpu = {name: statistics.median(ts) for name, ts in cpus.items()}
    floor = med["bzcat (floor)"]
    # Markup left in each tool's output of the last round (ingest/leaks.py's kinds).
    left: dict[str, dict[str, int]] = {}
    examples: dict[str, list[str]] = {}
    for name, cmd in tools.items():
        if isinstance(cmd, list):
            folder = Path(cmd[cmd.index("--out" if "--out" in cmd else "-o") + 1])
            texts = wikiextractor_texts(folder) if "wikiextractor" in name else ours_texts(folder)
            left[name], examples[name] = leftovers(texts)
    print(f"\n{'tool':44s} {'median s':>9s} {'CPU s':>7s} {'pages/s':>9s} {'MB/s':>7s} {'markup left':>12s}")
    for name, t in med.items():
        leaks = (sum(v for k, v in left[name].items() if k != "empty parentheses ()")
                 if name in left else "")
        print(f"{name:44s} {t:9.2f} {med_cpu[name]:7.2f} {n_pages / t:9.0f} {xml_bytes / 1e6 / t:7.1f} {leaks:>12}")
    ratios = {}
    for w in workers:
        ours = med[f"compara ingest, {w} worker(s)"]
        wx = med[f"wikiextractor, {w} process(es)"]
        cpu_ratio = med_cpu[f"wikiextractor, {w} process(es)"] / med_cpu[f"compara ingest, {w} worker(s)"]
        only = med[f"compara, articles only, {w} worker(s)"]
        only_cpu = med_cpu[f"wikiextractor, {w} process(es)"] / med_cpu[f"compara, articles only, {w} worker(s)"]
        ratios[w] = {"speed_ours_over_wikiextractor": wx / ours, "time_ours_over_floor": ours / floor,
                     "cpu_efficiency_ours_over_wikiextractor": cpu_ratio,
                     "articles_only_speed_over_wikiextractor": wx / only,
                     "articles_only_cpu_efficiency_over_wikiextractor": only_cpu}
        print(f"{w} process(es): compara ingest is {wx / ours:.2f}x wikiextractor's speed "
              f"({cpu_ratio:.2f}x per CPU second), articles only {wx / only:.2f}x ({only_cpu:.2f}x per "
              f"CPU second); {ours / floor:.2f}x the bzcat floor's time")
        others = [("reader_only_reads", f"compara ingest, {w} worker(s), reader only reads",
                   "with the reading process only reading (ingest.reader_cleans=false):")]
        if args.baseline:
            others.append(("baseline", f"baseline compara ingest, {w} worker(s)",
                           f"the baseline ({args.baseline}) is"))
        for key, name, label in others:
            speed = wx / med[name]
            cpu = med_cpu[f"wikiextractor, {w} process(es)"] / med_cpu[name]
            ratios[w][f"{key}_speed_over_wikiextractor"] = speed
            ratios[w][f"{key}_cpu_efficiency_over_wikiextractor"] = cpu
            tail = f"; this checkout is {med[name] / ours:.2f}x the baseline's speed" if key == "baseline" else ""
            print(f"{w} process(es): {label} {speed:.2f}x ({cpu:.2f}x per CPU second){tail}")

    w = workers[0]
    ours_left, wx_left = left[f"compara ingest, {w} worker(s)"], left[f"wikiextractor, {w} process(es)"]
    print(f"\n{'markup left in the text':34s} {'compara':>9s} {'wikiextractor':>14s}")
    for name in ours_left:
        print(f"{name:34s} {ours_left[name]:9d} {wx_left[name]:14d}")
    leaky = {name: ex for name, ex in examples.items() if "compara" in name and ex}
    for name, ex in leaky.items():
        print(f"markup left by {name}:\n  " + "\n  ".join(ex))
    result = {"pages": n_pages, "xml_bytes": xml_bytes, "rounds": args.rounds, "times_s": times,
              "cpu_s": cpus, "median_s": med, "median_cpu_s": med_cpu, "ratios": ratios,
              "leftovers": {"compara": ours_left, "wikiextractor": wx_left},
              "markup_left": left, "cpu_capability": cpu_capability(), "load_average": load}
    (OUT / "ingest.json").write_text(json.dumps(result, indent=2))
    print(f"\nwrote {OUT / 'ingest.json'} (CPU capability: {result['cpu_capability']}; 1-minute "
          f"load average {load['before']} before, {load['after']} after, on {os.cpu_count()} CPUs)")
    if leaky:
        print("FAILED: compara's text must hold no markup", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
