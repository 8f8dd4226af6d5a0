"""Search backends over 100k generated documents: build time, index size, top-10 latency (issue 14, part 7).

Corpus: the pages of a DeepSearchSynth world (seed 0, 100,000 documents by default).
Queries: the hop queries of generated questions (``"<name> <keyword>"``, e.g. ``Talo Veskin
born``), the task's own workload; most hold one *head* word found on up to 40% of the pages.
Every backend is built in this process from the same documents and saved to a temporary
directory, then queried one query at a time (after 20 warm-up queries) through ``search(q,
10)`` as a tool calls it (hits with titles and snippets):

* ``tantivy`` (the default backend), ``fts5`` (as the backend runs it: rare-word candidates
  rescored with FTS5's BM25) and ``bm25s``;
* baselines measured in the same run: ``fts5 OR query`` (the plain ``"a" OR "b" ...`` query
  ranked by FTS5's ``bm25()``, on the same index) and ``numpy BM25`` (brute force: every
  posting of every query word scored into a dense array, then ``argpartition``).

Printed per backend: build seconds (add + save), index size on disk, query p50 / p99 in ms,
recall@5 (the page stating the hop's fact among the top 5) and top-10 overlap with tantivy.

    python benchmarks/search_index.py [--docs 100000] [--queries 500] [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from rao_envs.envs.deep_search import build_world, hop_query, make_question
from rao_envs.envs.deep_search.world import RELATIONS
from rao_envs.tools.search import B, K1, Doc, Hit, available_backends, create_index, doc_terms, open_index, query_terms, snippet


class NumpyBM25:
    """Brute-force Lucene BM25 in numpy: postings per word, every posting scored per query."""

    def __init__(self, docs: list[Doc]) -> None:
        vocab: dict[str, int] = {}
        cols, rows, vals = [], [], []
        lengths = np.empty(len(docs), dtype=np.float32)
        for i, d in enumerate(docs):
            words = doc_terms(f"{d.title}\n{d.text}")
            lengths[i] = len(words)
            for w, c in Counter(words).items():
                cols.append(vocab.setdefault(w, len(vocab)))
                rows.append(i)
                vals.append(c)
        cols_a = np.array(cols, dtype=np.int64)
        order = np.argsort(cols_a, kind="stable")
        self.doc = np.array(rows, dtype=np.int32)[order]
        self.tf = np.array(vals, dtype=np.float32)[order]
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(cols_a, minlength=len(vocab)))])
        df = np.diff(self.indptr).astype(np.float64)
        n = len(docs)
        self.idf = np.log(1 + (n - df + 0.5) / (df + 0.5)).astype(np.float32)
        self.norm = (K1 * (1 - B + B * lengths / lengths.mean())).astype(np.float32)
        self.vocab, self.docs = vocab, docs

    def search(self, query: str, k: int = 10) -> list[Hit]:
        """Top ``k`` by exhaustive BM25."""
        ids = [self.vocab[w] for w in query_terms(query) if w in self.vocab]
        if not ids:
            return []
        scores = np.zeros(len(self.docs), dtype=np.float32)
        for t in ids:
            lo, hi = self.indptr[t], self.indptr[t + 1]
            d, f = self.doc[lo:hi], self.tf[lo:hi]
            scores[d] += self.idf[t] * f * (K1 + 1) / (f + self.norm[d])
        top = np.argpartition(-scores, k)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [Hit(self.docs[i].id, self.docs[i].title, snippet(self.docs[i].text), float(scores[i])) for i in top if scores[i] > 0]

    def save(self, path: Path) -> None:
        """Write the arrays (the vocabulary as one newline-joined string)."""
        np.savez(path / "bm25.npz", doc=self.doc, tf=self.tf, indptr=self.indptr, idf=self.idf, norm=self.norm,
                 vocab=np.array("\n".join(self.vocab)))


def fts5_or_query(index, query: str, k: int = 10) -> list[Hit]:
    """FTS5's plain OR query ranked by ``bm25()`` over the whole index (the baseline)."""
    words = query_terms(query)
    if not words:
        return []
    conn = index._conn
    match = " OR ".join(f'"{w}"' for w in words)
    ranked = conn.execute("SELECT rowid, rank FROM fts WHERE fts MATCH ? ORDER BY rank LIMIT ?", (match, k)).fetchall()
    if not ranked:
        return []
    marks = ",".join("?" * len(ranked))
    rows = {r[0]: r[1:] for r in conn.execute(f"SELECT n, id, title, substr(text, 1, 320) FROM docs WHERE n IN ({marks})", [r[0] for r in ranked])}
    return [Hit(rows[n][0], rows[n][1], snippet(rows[n][2]), -float(s)) for n, s in ranked]


def dir_size(path: Path) -> int:
    """Bytes under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def hop_queries(world, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` distinct (hop query, page stating the fact) pairs from generated questions."""
    rng = np.random.default_rng(seed)
    out: dict[str, str] = {}
    while len(out) < n:
        qs = make_question(world, rng, int(rng.integers(2, 7)), int(rng.integers(1, 4)))
        for q in qs.values():
            if "op" in q["plan"]:
                continue
            e = world.by_name[q["plan"]["start"]]
            for step in q["plan"]["steps"]:
                out.setdefault(hop_query(world.names[e], step), world.fact_doc(e, step))
                e = world.lookup(e, step) if step in RELATIONS else e
    return list(out.items())[:n]


def time_queries(search, queries: list[tuple[str, str]]) -> tuple[list[float], list[list[str]]]:
    """Per-query seconds (after 20 warm-ups) and the top-10 ids of each query."""
    for q, _ in queries[:20]:
        search(q, 10)
    times, ids = [], []
    for q, _ in queries:
        t0 = time.perf_counter()
        hits = search(q, 10)
        times.append(time.perf_counter() - t0)
        ids.append([h.id for h in hits])
    return times, ids


def main() -> None:
    """Build every backend, time the queries, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--quick", action="store_true", help="3,000 documents, 60 queries (smoke test)")
    args = ap.parse_args()
    n_docs, n_queries = (3_000, 60) if args.quick else (args.docs, args.queries)

    t0 = time.perf_counter()
    world = build_world(0, n_docs)
    docs = world.documents()
    gen_s = time.perf_counter() - t0
    queries = hop_queries(world, n_queries)
    text_mb = sum(len(d.title) + len(d.text) for d in docs) / 2**20
    print(f"corpus: {n_docs:,} pages, {text_mb:.1f} MiB of text (generated in {gen_s:.1f} s); {len(queries)} hop queries")

    rows = []
    ref: list[list[str]] | None = None
    with tempfile.TemporaryDirectory(prefix="rao_envs-bench-") as tmp:
        runs: list[tuple[str, object, float, int]] = []
        for backend in ("tantivy", "fts5", "bm25s"):
            if backend not in available_backends():
                print(f"{backend}: not installed, skipped")
                continue
            t0 = time.perf_counter()
            index = create_index(backend)
            index.add(docs)
            index.save(Path(tmp) / backend)
            build_s = time.perf_counter() - t0
            index = open_index(Path(tmp) / backend)  # query the saved index, as tasks do
            runs.append((backend, index.search, build_s, dir_size(Path(tmp) / backend)))
            if backend == "fts5":
                runs.append(("fts5 OR query (baseline)", lambda q, k, ix=index: fts5_or_query(ix, q, k), build_s, dir_size(Path(tmp) / backend)))
        t0 = time.perf_counter()
        brute = NumpyBM25(docs)
        (Path(tmp) / "numpy").mkdir()
        brute.save(Path(tmp) / "numpy")
        runs.append(("numpy BM25 (brute force)", brute.search, time.perf_counter() - t0, dir_size(Path(tmp) / "numpy")))
        for name, search, build_s, size in runs:
            times, ids = time_queries(search, queries)
            if ref is None:
                ref = ids
            recall = sum(doc in top[:5] for (_, doc), top in zip(queries, ids)) / len(queries)
            overlap = np.mean([len(set(a) & set(b)) / max(1, len(b)) for a, b in zip(ids, ref)])
            ms = np.array(times) * 1000
            rows.append((name, build_s, size, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), recall, overlap))

    print(f"\n| backend | build (add + save) | index on disk | query p50 | query p99 | recall@5 | top-10 overlap with tantivy |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, build_s, size, p50, p99, recall, overlap in rows:
        print(f"| {name} | {build_s:.1f} s | {size / 2**20:.0f} MiB | {p50:.3f} ms | {p99:.3f} ms | {100 * recall:.1f}% | {overlap:.2f} |")
    by = {r[0]: r for r in rows}
    if "tantivy" in by and "fts5 OR query (baseline)" in by:
        p50, base = by["tantivy"][3], by["fts5 OR query (baseline)"][3]
        print(f"\ndefault backend (tantivy) p50 {p50:.3f} ms: target <= 1 ms {'met' if p50 <= 1 else 'NOT met'}; "
              f"{base / p50:.0f}x the FTS5 OR query: target >= 5x {'met' if base / p50 >= 5 else 'NOT met'}")
    if "fts5" in by:
        p50 = by["fts5"][3]
        print(f"fts5 backend p50 {p50:.3f} ms: target <= 10 ms {'met' if p50 <= 10 else 'NOT met'}")
    print(f"machine: {os.cpu_count()} CPUs; one query at a time, one process")


if __name__ == "__main__":
    main()
