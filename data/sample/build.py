"""Build the sample dump from the page files in data/sample/pages/.

The pages are written by this project, one file per page: header lines (``title: ...``), a line
``---``, then the raw wikitext. This script assembles them, in page-id order, into a dump in
MediaWiki's export format 0.10, the format of ptwiki's ``pages-articles`` dumps:

    python data/sample/build.py                 # ptwiki-amostra-pages-articles.xml (committed)
    python data/sample/build.py --bz2           # also .xml.bz2 (one stream)
    python data/sample/build.py --multistream   # also -multistream.xml.bz2 + index, like ptwiki's
    python data/sample/build.py --check         # exit 1 if the committed XML is out of date
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from ingest.namespaces import NAMESPACES, redirect_target, split_title  # noqa: E402

PAGES_DIR = HERE / "pages"
XML_NAME = "ptwiki-amostra-pages-articles.xml"
EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)


def read_page(path: Path) -> dict:
    raw = path.read_text(encoding="utf-8")
    head, sep, text = raw.partition("\n---\n")
    if not sep:
        raise SystemExit(f"{path}: missing the '---' line after the header")
    meta = {}
    for lineno, line in enumerate(head.splitlines(), start=1):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise SystemExit(f"{path}:{lineno}: header line is not 'key: value'")
        meta[key.strip()] = value.strip()
    if "title" not in meta:
        raise SystemExit(f"{path}: header lacks 'title:'")
    page_id = int(meta.get("id", path.stem))
    ns, _ = split_title(meta["title"])
    return {"id": page_id, "title": meta["title"], "ns": ns, "text": text.rstrip("\n") + "\n"}


def sha1_base36(text: str) -> str:
    """The <sha1> of a revision as MediaWiki writes it: SHA-1 in base 36, 31 digits."""
    n = int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out.rjust(31, "0")


def siteinfo() -> str:
    lines = [
        "  <siteinfo>",
        "    <sitename>Wikipédia</sitename>",
        "    <dbname>ptwiki</dbname>",
        "    <base>https://pt.wikipedia.org/wiki/Wikip%C3%A9dia:P%C3%A1gina_principal</base>",
        "    <generator>MediaWiki 1.43.0-wmf.1</generator>",
        "    <case>first-letter</case>",
        "    <namespaces>",
    ]
    for key in sorted([0, *NAMESPACES]):
        if key == 0:
            lines.append('      <namespace key="0" case="first-letter" />')
        else:
            name = NAMESPACES[key][0]
            lines.append(f'      <namespace key="{key}" case="first-letter">{escape(name)}</namespace>')
    lines += ["    </namespaces>", "  </siteinfo>"]
    return "\n".join(lines) + "\n"


def page_xml(page: dict) -> str:
    pid = page["id"]
    rev_id = 60_000_000 + pid * 13
    stamp = (EPOCH + timedelta(days=pid % 300, minutes=pid * 7 % 1440)).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = page["text"]
    out = [
        "  <page>",
        f"    <title>{escape(page['title'])}</title>",
        f"    <ns>{page['ns']}</ns>",
        f"    <id>{pid}</id>",
    ]
    target = redirect_target(text)
    if target:
        out.append(f"    <redirect title={quoteattr(target)} />")
    out += [
        "    <revision>",
        f"      <id>{rev_id}</id>",
        f"      <parentid>{rev_id - 5}</parentid>",
        f"      <timestamp>{stamp}</timestamp>",
        "      <contributor>",
        "        <username>Amostra</username>",
        "        <id>1</id>",
        "      </contributor>",
        "      <comment>amostra</comment>",
        "      <model>wikitext</model>",
        "      <format>text/x-wiki</format>",
        f'      <text bytes="{len(text.encode("utf-8"))}" xml:space="preserve">{escape(text)}</text>',
        f"      <sha1>{sha1_base36(text)}</sha1>",
        "    </revision>",
        "  </page>",
    ]
    return "\n".join(out) + "\n"


HEADER = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" '
          'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
          'xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.10/ '
          'http://www.mediawiki.org/xml/export-0.10.xsd" version="0.10" xml:lang="pt">\n')
FOOTER = "</mediawiki>\n"


def load_pages(pages_dir: Path = PAGES_DIR) -> list[dict]:
    pages = [read_page(p) for p in sorted(pages_dir.glob("*.wiki"))]
    ids = [p["id"] for p in pages]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise SystemExit(f"duplicate page ids: {sorted(dupes)}")
    titles = [p["title"] for p in pages]
    dupes_t = {t for t in titles if titles.count(t) > 1}
    if dupes_t:
        raise SystemExit(f"duplicate titles: {sorted(dupes_t)}")
    return sorted(pages, key=lambda p: p["id"])


def build_xml(pages: list[dict]) -> str:
    return HEADER + siteinfo() + "".join(page_xml(p) for p in pages) + FOOTER


def write_multistream(pages: list[dict], out: Path, per_stream: int = 100) -> Path:
    """ptwiki's multistream layout: the header, then bz2 streams of 100 pages, then the footer,
    plus an index of ``offset:page_id:title`` lines."""
    index_lines = []
    with open(out, "wb") as fh:
        fh.write(bz2.compress((HEADER + siteinfo()).encode("utf-8")))
        for start in range(0, len(pages), per_stream):
            chunk = pages[start:start + per_stream]
            offset = fh.tell()
            index_lines += [f"{offset}:{p['id']}:{p['title']}" for p in chunk]
            fh.write(bz2.compress("".join(page_xml(p) for p in chunk).encode("utf-8")))
        fh.write(bz2.compress(FOOTER.encode("utf-8")))
    index = out.with_name(out.name.replace(".xml.bz2", "-index.txt.bz2"))
    index.write_bytes(bz2.compress(("\n".join(index_lines) + "\n").encode("utf-8")))
    return index


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=HERE, help="where to write (default: data/sample)")
    ap.add_argument("--bz2", action="store_true", help="also write the .xml.bz2")
    ap.add_argument("--multistream", action="store_true", help="also write a multistream .xml.bz2 + index")
    ap.add_argument("--check", action="store_true", help="only check the committed XML is up to date")
    args = ap.parse_args(argv)
    pages = load_pages()
    xml = build_xml(pages)
    target = args.out_dir / XML_NAME
    if args.check:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current != xml:
            print(f"{target} is out of date: run python data/sample/build.py", file=sys.stderr)
            return 1
        print(f"{target} is up to date ({len(pages)} pages)")
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    target.write_text(xml, encoding="utf-8")
    print(f"wrote {target} ({len(pages)} pages, {len(xml.encode('utf-8')):,} bytes)")
    if args.bz2:
        bz = target.with_suffix(".xml.bz2")
        bz.write_bytes(bz2.compress(xml.encode("utf-8")))
        print(f"wrote {bz}")
    if args.multistream:
        ms = args.out_dir / XML_NAME.replace(".xml", "-multistream.xml.bz2")
        index = write_multistream(pages, ms)
        print(f"wrote {ms} and {index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
