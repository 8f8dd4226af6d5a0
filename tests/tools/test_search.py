"""rao_envs.tools.search: the SearchIndex protocol over every installed backend, query safety, caching."""

from __future__ import annotations

import json
import os
import sqlite3

import numpy as np
import pytest

from rao_envs.tools import build_once, cache_dir
from rao_envs.tools.search import (
    MAX_TERMS,
    Doc,
    FTS5Index,
    Hit,
    SearchIndex,
    SearchIndexError,
    available_backends,
    cached_index,
    create_index,
    default_backend,
    open_index,
    query_terms,
    snippet,
)

BACKENDS = available_backends()
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]

NASTY_QUERIES = [
    "", " ", "\n\t", '"', '""', '"unbalanced', "'", "(", ")", "((((", "a) OR (b", "NEAR(alpha beta, 2)",
    "alpha NEAR beta", "NEAR", "AND", "OR", "NOT", "alpha AND", "OR beta", "NOT NOT", "*", "alp*", "^alpha",
    "title:alpha", "body:beta", "id:d1", ":", "::", "alpha:", "-alpha", "+beta", "alpha~2", "[a TO z]", "{}",
    "\x00", "alpha\x00beta", "\x00" * 100, "x" * 100_000, "alpha " * 20_000, "é" * 5000, "\ud800", "a\udfffb",
    "日本語 テキスト", "🙂🙃", "\u0301", "²³", "ǅ", "ß", "İstanbul", "a_b_c", "__", "1e309", "NaN", "-0",
    "SELECT * FROM docs; --", "'); DROP TABLE docs; --", "<tool>{}</tool>", "\\", "\\\"", "%", "_", "?", "$1",
]


def corpus(n: int = 300, seed: int = 0) -> list[Doc]:
    """A small fixed corpus: each document holds a unique marker word and random common words."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        body = " ".join(rng.choice(WORDS, size=int(rng.integers(5, 30))))
        docs.append(Doc(f"doc{i:04d}", f"Entry {i}", f"Marker{i} is here. {body}."))
    return docs


@pytest.fixture(scope="module", params=BACKENDS)
def built(request, tmp_path_factory):
    """(fresh index, the same index saved and reopened) for each installed backend."""
    index = create_index(request.param)
    index.add(corpus())
    path = tmp_path_factory.mktemp(request.param) / "saved"
    index.save(path)
    return index, open_index(path)


def test_backends_installed_and_default():
    assert "fts5" in BACKENDS  # the standard library fallback is always there
    assert default_backend() == ("tantivy" if "tantivy" in BACKENDS else "fts5")


def test_query_terms_are_plain_words():
    assert query_terms('Who founded "Velmora Guild"? NEAR(x*, title:y)') == ["founded", "velmora", "guild", "near", "x", "title", "y"]
    assert query_terms("the of who") == ["the", "of", "who"]  # only stopwords: keep them
    assert query_terms("The THE the Alpha alpha") == ["alpha"]
    assert query_terms("") == query_terms("\x00 () * : \"") == query_terms(None) == []  # type: ignore[arg-type]
    assert len(query_terms(" ".join(f"w{i}" for i in range(1000)))) == MAX_TERMS
    assert query_terms("a" * 45) == []  # longer than any indexed token
    assert query_terms("x" * 100_000 + " alpha") == []  # only the first characters are read


def test_snippet_is_the_opening_cut_at_a_word():
    assert snippet("Short text.") == "Short text."
    long = "word " * 100
    cut = snippet(long, 40)
    assert len(cut) <= 40 and cut.endswith("…") and not cut[:-1].endswith(" ")


def test_protocol_add_search_get_len(built):
    for index in built:
        assert isinstance(index, SearchIndex) and len(index) == 300
        hits = index.search("marker17", 5)
        assert hits and hits[0].id == "doc0017" and isinstance(hits[0], Hit)
        assert hits[0].title == "Entry 17" and hits[0].snippet.startswith("Marker17 is here.")
        scores = [h.score for h in index.search("alpha beta gamma", 10)]
        assert len(scores) == 10 and scores == sorted(scores, reverse=True)
        assert index.get("doc0042") == Doc("doc0042", "Entry 42", corpus()[42].text)
        assert index.get("nope") is None and index.get("") is None and index.get("x" * 5000) is None
        assert len(index.search("alpha", 1000)) <= 100 and len(index.search("alpha", 0)) == 1
        assert index.search("unknownword", 5) == []


def test_backends_agree_on_the_top_document():
    indexes = {}
    for b in BACKENDS:
        indexes[b] = create_index(b)
        indexes[b].add(corpus())
    for i in range(0, 300, 7):
        tops = {b: idx.search(f"marker{i} alpha", 3)[0].id for b, idx in indexes.items()}
        assert set(tops.values()) == {f"doc{i:04d}"}, tops


@pytest.mark.parametrize("query", NASTY_QUERIES, ids=range(len(NASTY_QUERIES)))
def test_query_syntax_never_reaches_a_backend(built, query):
    for index in built:
        hits = index.search(query, 5)
        assert isinstance(hits, list) and all(isinstance(h, Hit) for h in hits)
        if not query_terms(query):
            assert hits == []


def test_random_queries_never_raise(built):
    rng = np.random.default_rng(1)
    alphabet = list('"*:()^~-+[]{}\\\'<>;,.!?/ ') + WORDS + ["NEAR", "AND", "OR", "NOT", "\x00", "é", "\u200b"]
    for _ in range(300):
        q = " ".join(str(x) for x in rng.choice(alphabet, size=int(rng.integers(0, 12))))
        if rng.random() < 0.3:
            q = "".join(chr(int(c)) for c in rng.integers(1, 0x2FFFF, size=int(rng.integers(1, 40))) if not 0xD800 <= c < 0xE000)
        for index in built:
            assert isinstance(index.search(q, int(rng.integers(-3, 200))), list)


def test_duplicate_ids_and_bad_saves_are_errors(tmp_path):
    for b in BACKENDS:
        index = create_index(b)
        index.add(corpus(5))
        with pytest.raises(ValueError, match="duplicate"):
            index.add([Doc("doc0001", "again", "text")])
        (tmp_path / b).mkdir()
        (tmp_path / b / "junk").write_text("x")
        with pytest.raises(SearchIndexError, match="new or empty directory"):
            index.save(tmp_path / b)
    with pytest.raises(SearchIndexError, match="not a saved search index"):
        open_index(tmp_path / "missing")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "meta.json").write_text(json.dumps({"format": 0, "backend": "fts5"}))
    with pytest.raises(SearchIndexError, match="delete it and rebuild"):
        open_index(tmp_path / "old")
    with pytest.raises(SearchIndexError, match="unknown search backend"):
        create_index("lucene")


def test_fts5_rescoring_matches_fts5_bm25():
    """The FTS5 fast path (rare-word candidates, scored here) gives FTS5's own bm25() scores."""
    docs = corpus(2000, seed=3)
    index = FTS5Index()
    index.add(docs)
    conn = index._conn
    for i in range(0, 2000, 97):
        query = f"marker{i} alpha beta"
        fast = index.search(query, 5)
        assert fast[0].id == f"doc{i:04d}"
        match = " OR ".join(f'"{w}"' for w in query_terms(query))
        plain = dict(conn.execute(
            "SELECT d.id, -bm25(fts) FROM fts JOIN docs d ON d.n = fts.rowid WHERE fts MATCH ? ORDER BY rank LIMIT 200",
            (match,),
        ).fetchall())
        for hit in fast:
            assert hit.score == pytest.approx(plain[hit.id], rel=1e-9), (query, hit)


def test_cached_index_builds_once(tmp_path):
    calls = []

    def docs():
        calls.append(1)
        return corpus(50)

    first = cached_index("tiny-corpus", docs, backend="fts5", root=tmp_path)
    second = cached_index("tiny-corpus", docs, backend="fts5", root=tmp_path)
    assert calls == [1] and len(first) == len(second) == 50
    assert [h.id for h in first.search("marker3", 3)] == [h.id for h in second.search("marker3", 3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-corpus.fts5.v1"]  # no temporary directory left
    with pytest.raises(SearchIndexError, match="may use only"):
        cached_index("../escape", docs, root=tmp_path)


def test_build_once_is_atomic_and_loses_races_cleanly(tmp_path):
    final = tmp_path / "artifact"

    def crash(tmp):
        (tmp / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        build_once(final, crash)
    assert not final.exists() and list(tmp_path.iterdir()) == []

    def racing(tmp):  # another worker finishes first while we build
        final.mkdir()
        (final / "winner").write_text("1")
        (tmp / "loser").write_text("2")

    assert build_once(final, racing) == final
    assert [p.name for p in final.iterdir()] == ["winner"] and [p.name for p in tmp_path.iterdir()] == ["artifact"]
    assert build_once(final, crash) == final  # already there: nothing is built


def test_cache_dir_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RAO_ENVS_CACHE", str(tmp_path / "c"))
    assert cache_dir("a", "b") == tmp_path / "c" / "a" / "b" and (tmp_path / "c" / "a" / "b").is_dir()
    monkeypatch.delenv("RAO_ENVS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "rao_envs"


def test_saved_fts5_index_is_read_only(tmp_path):
    index = create_index("fts5")
    index.add(corpus(10))
    index.save(tmp_path / "ix")
    opened = open_index(tmp_path / "ix")
    with pytest.raises(sqlite3.OperationalError):
        opened.add([Doc("new", "t", "x")])
    assert len(opened) == 10 and os.path.exists(tmp_path / "ix" / "meta.json")
