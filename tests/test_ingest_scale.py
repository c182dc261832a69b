"""What keeps `compara ingest` bounded at full scale: the record-id set, the redirect index, and
the ordered map that lets the reading process clean batches while its workers are busy."""

import os
import random

import orjson
import pytest

from ingest import pipeline
from ingest.keyset import KeySet, RedirectIndex


def _keys(n, seed):
    rng = random.Random(seed)
    return [rng.getrandbits(64) for _ in range(n)]


def test_keyset_agrees_with_a_python_set_across_flushes_and_merges():
    keys = _keys(5000, 1) + [0, 2**64 - 1, 2**63]
    ks, ref = KeySet(buffer=64, max_run=512), set()
    for i in range(0, len(keys), 37):  # an article's worth of keys at a time
        chunk = set(keys[i:i + 37])
        assert ks.isdisjoint(chunk) == ref.isdisjoint(chunk)
        ks |= chunk
        ref |= chunk
    assert len(ks) == len(ref)
    assert len(ks._runs) > 1 and max(r.size for r in ks._runs) <= 512  # flushed, merged, capped
    assert all((r[1:] > r[:-1]).all() for r in ks._runs)  # sorted, no repeats
    assert all(k in ks for k in keys)
    absent = _keys(2000, 2)
    assert [k in ks for k in absent] == [k in ref for k in absent]
    assert not ks.isdisjoint({absent[0], keys[123]})
    assert ks.isdisjoint(set(absent) - ref)


def test_keyset_does_not_count_a_key_twice():
    ks = KeySet(buffer=4, max_run=16)
    for _ in range(3):
        ks |= {1, 2, 3, 4, 5}
        ks.add(6)
    ks |= {6, 7}
    assert len(ks) == 7
    assert ks.nbytes <= 7 * 8


def test_keyset_add_new_says_which_keys_were_new_as_a_set_would():
    """Keys already held (in the newest set or in a sorted run) and repeats within the call are
    not new; the first of each new key is, and is added."""
    ks, ref = KeySet(buffer=8, max_run=64), set()
    stream = _keys(300, 3)
    stream = stream + stream[::7] + stream[5:40]  # repeats across and within calls
    for start in range(0, len(stream), 13):
        part = stream[start:start + 13] + stream[start:start + 2]
        expected = []
        for key in part:
            expected.append(key not in ref)
            ref.add(key)
        assert ks.add_new(part) == expected
        assert len(ks) == len(ref)
    assert ks.nbytes > 0  # some lookups went through sorted runs
    assert all(k in ks for k in ref)


def test_keyset_holds_keys_in_about_8_bytes_each():
    ks = KeySet(buffer=1000, max_run=1 << 20)
    keys = _keys(100_000, 3)
    for i in range(0, len(keys), 100):
        ks |= set(keys[i:i + 100])
    assert len(ks) == 100_000
    assert ks.nbytes <= 8 * 100_000


def test_redirect_index_finds_every_alias_in_file_order(tmp_path):
    recs = [{"title": f"R{i}", "target": f"T{i % 7}", "id": i, "namespace": 0} for i in range(50)]
    recs.append({"title": "Acentuação", "target": "Ação", "id": 99, "namespace": 0})
    path = tmp_path / "redirects.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    with RedirectIndex(path) as index:
        assert len(index) == 51 and index.targets == 8
        for t in range(7):
            assert index.aliases(f"T{t}") == [r["title"] for r in recs if r["target"] == f"T{t}"]
        assert index.aliases("Ação") == ["Acentuação"]
        assert index.aliases("T7") == [] and index.aliases("") == []


def test_redirect_index_checks_the_title_behind_a_hash(tmp_path, monkeypatch):
    from ingest import keyset

    monkeypatch.setattr(keyset, "title_hash", lambda title: 42)  # every title collides
    path = tmp_path / "redirects.jsonl"
    path.write_bytes(b'{"title":"a","target":"A"}\n{"title":"b","target":"B"}\n')
    with RedirectIndex(path) as index:
        assert index.aliases("A") == ["a"] and index.aliases("B") == ["b"]
        assert index.aliases("C") == []


def test_redirect_index_of_an_empty_file(tmp_path):
    path = tmp_path / "redirects.jsonl"
    path.touch()
    with RedirectIndex(path) as index:
        assert len(index) == 0 and index.targets == 0 and index.aliases("X") == []


def _square_with_pid(x):
    return x * x, os.getpid()


@pytest.mark.parametrize(("workers", "reader_cleans"), [(0, True), (1, True), (2, True), (1, False)])
def test_ordered_map_keeps_order_and_says_who_ran_what(workers, reader_cleans):
    items = ((i, i) for i in range(300))
    out = list(pipeline._ordered_map(_square_with_pid, items, workers, reader_cleans))
    assert [tag for tag, _ in out] == list(range(300))
    assert [res[0] for _, res in out] == [i * i for i in range(300)]
    pids = {res[1] for _, res in out}
    if workers == 0:
        assert pids == {os.getpid()}
    else:
        assert len(pids - {os.getpid()}) >= 1  # the workers did work
    if not reader_cleans:
        assert os.getpid() not in pids


def test_the_reader_cleaning_or_not_writes_the_same(tmp_path, sample_dump):
    from ingest.config import IngestConfig

    for flag in (True, False):
        pipeline.run_ingest(sample_dump, tmp_path / str(flag),
                            IngestConfig(workers=1, batch_pages=3, reader_cleans=flag))
    for name in pipeline.OUTPUTS[:4]:
        assert (tmp_path / "True" / name).read_bytes() == (tmp_path / "False" / name).read_bytes()


def _fail_on_seven(x):
    if x == 7:
        raise ValueError("seven")
    return x


def test_ordered_map_raises_a_workers_error():
    with pytest.raises(ValueError, match="seven"):
        list(pipeline._ordered_map(_fail_on_seven, ((i, i) for i in range(20)), 1))


def test_record_keys_read_from_the_line_start_match_the_parsed_ids(tmp_path):
    from ingest.instructions import dedup_key

    recs = [{"id": f"{k:016x}", "instruction": "P?", "input": "", "output": "R."} for k in _keys(50, 4)]
    path = tmp_path / "instructions.train.partial.jsonl"
    lines = [orjson.dumps(r) + b"\n" for r in recs]
    lines.insert(3, b'{"instruction":"P?","id":"00000000000000ff","input":"","output":"R."}\n')
    path.write_bytes(b"".join(lines))
    chunks = list(pipeline._record_keys(path, chunk=8))
    assert all(len(c) <= 8 for c in chunks) and len(chunks) > 1
    assert set().union(*chunks) == {dedup_key(r) for r in recs} | {255}
