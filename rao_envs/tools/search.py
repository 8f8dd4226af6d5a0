"""Full-text search for tasks: one :class:`SearchIndex` protocol, three embedded BM25 backends.

* ``tantivy`` (default when its wheel is installed): a Rust library with block-max pruning;
  top-10 over 100k documents in a fraction of a millisecond.
* ``fts5``: SQLite's FTS5 with BM25 ranking; standard library only, the zero-dependency fallback.
* ``bm25s`` (extra ``rao_envs[search]``): numpy BM25, built for batched throughput.

Every backend ranks documents by BM25 (k1 = 1.2, b = 0.75) over ``title + text`` and answers
the same free text the same way, because no backend ever sees a query language: the query is
reduced by :func:`query_terms` to plain lowercase words (letters and digits; stopwords dropped
unless nothing else is left; at most :data:`MAX_TERMS`), and each backend is handed those
words as literal terms (tantivy: term queries built in code, never parsed; FTS5: each word a
quoted string joined with ``OR``; bm25s: token lists). Quotes, ``NEAR``, ``*``, ``field:``
syntax, parentheses, NUL bytes or a 100 kB query are therefore just text: a query without a
usable word returns no hits, and :meth:`SearchIndex.search` never raises for any string.

A :class:`Hit` carries the document's id, title, score and a **snippet**: the opening of the
document (at most :data:`SNIPPET_CHARS` characters, cut at a word). It does not depend on the
query, so it is identical across backends. Scores are each backend's own BM25 variant: rank
orders agree closely, absolute scores do not.

An index is built in memory (``create_index(backend)``, then ``add``), written with ``save(dir)``
and reopened with :func:`open_index` (or ``Class.open``); :func:`cached_index` builds an index
once per machine under :func:`~rao_envs.tools.cache.cache_dir` (atomically: parallel workers
never read half an index) and opens it read-only afterwards.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import re
import shutil
import sqlite3
import tempfile
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from rao_envs.errors import RaoEnvsError
from rao_envs.tools.cache import build_once, cache_dir

FORMAT = 1
"""Version of the saved-index layout; bump when it changes (cached indexes are rebuilt)."""
MAX_QUERY_CHARS = 10_000
"""Only the first this many characters of a query are read."""
MAX_TERMS = 32
"""At most this many distinct words of a query are searched."""
MAX_TERM_BYTES = 39
"""Longer words are dropped (tantivy's default tokenizer drops tokens of 40+ bytes)."""
MAX_K = 100
"""The most hits one search returns."""
SNIPPET_CHARS = 160
"""The longest snippet (the document's opening)."""
K1, B = 1.2, 0.75
STOPWORDS = frozenset(
    "a an and are as at be by did do does for from had has have how in is it its of on or that the "
    "this to was were what when where which who whom whose why with".split()
)
_WORD = re.compile(r"[^\W_]+")


class SearchIndexError(RaoEnvsError, ValueError):
    """A saved index is missing, incomplete or of another format; the message says what to delete."""


@dataclass(frozen=True, slots=True)
class Doc:
    """A document: a unique ``id``, a ``title`` and its ``text``."""

    id: str
    title: str
    text: str


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: the document's id and title, its opening as a snippet, its BM25 score."""

    id: str
    title: str
    snippet: str
    score: float


def doc_terms(text: str) -> list[str]:
    """The indexed words of a document: every lowercase run of letters/digits under 40 bytes."""
    return [w for w in _WORD.findall(text.lower()) if len(w.encode()) <= MAX_TERM_BYTES]


def query_terms(query: str) -> list[str]:
    """The words a query searches for: distinct, lowercase, letters and digits only, in order.

    Stopwords (``the``, ``of``, ``who`` ...) are dropped unless only stopwords are left; at
    most :data:`MAX_TERMS` words of the first :data:`MAX_QUERY_CHARS` characters. An empty
    list means the query has nothing to search for.

    >>> query_terms('Who founded "Velmora Guild"? NEAR(x*, title:y)')
    ['founded', 'velmora', 'guild', 'near', 'x', 'title', 'y']
    """
    if not isinstance(query, str):
        return []
    words = dict.fromkeys(doc_terms(query[:MAX_QUERY_CHARS]))
    content = [w for w in words if w not in STOPWORDS]
    return (content or list(words))[:MAX_TERMS]


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The opening of ``text`` on one line, cut at a word boundary to at most ``limit`` characters."""
    head = " ".join(text[: limit * 2].split())
    if len(head) <= limit:
        return head
    cut = head.rfind(" ", 0, limit - 1)
    return head[: cut if cut > limit // 2 else limit - 1] + "…"


def _clamp_k(k: int) -> int:
    return max(1, min(int(k), MAX_K))


def _check_new_dir(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise SearchIndexError(f"save({str(path)!r}): the target must be a new or empty directory")
    path.mkdir(parents=True, exist_ok=True)


def _write_meta(path: Path, backend: str, n: int) -> None:
    (path / "meta.json").write_text(json.dumps({"format": FORMAT, "backend": backend, "docs": n}))


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads((Path(path) / "meta.json").read_text())
    except (OSError, ValueError):
        raise SearchIndexError(f"{str(path)!r} is not a saved search index (no readable meta.json); delete it and rebuild") from None
    if meta.get("format") != FORMAT or meta.get("backend") not in BACKENDS:
        raise SearchIndexError(
            f"{str(path)!r} holds a search index of format {meta.get('format')!r}/{meta.get('backend')!r}; "
            f"this rao_envs reads format {FORMAT} of {sorted(BACKENDS)}: delete it and rebuild"
        )
    return meta


@runtime_checkable
class SearchIndex(Protocol):
    """What every backend offers: add documents, search, fetch one, save and reopen."""

    backend: ClassVar[str]

    def add(self, docs: Iterable[Doc]) -> None:
        """Index ``docs`` (ids must be new); they are searchable when ``add`` returns."""
        ...

    def search(self, query: str, k: int = 10) -> list[Hit]:
        """The top ``k`` documents for free text ``query`` by BM25, best first; never raises for a string."""
        ...

    def get(self, doc_id: str) -> Doc | None:
        """The document with id ``doc_id``, or None."""
        ...

    def save(self, path: str | os.PathLike) -> None:
        """Write the index into the directory ``path`` (new or empty)."""
        ...

    @classmethod
    def open(cls, path: str | os.PathLike) -> SearchIndex:
        """Open an index written by :meth:`save` (read-only)."""
        ...

    def __len__(self) -> int:
        """The number of documents."""
        ...


# ---------------------------------------------------------------------------- tantivy
class TantivyIndex:
    """tantivy backend: BM25 term queries built in code (no query parser), documents stored as JSON.

    Built with one indexing thread so that the same documents give the same segments, hence
    the same order among equal scores, on every machine.
    """

    backend: ClassVar[str] = "tantivy"
    HEAP = 256_000_000

    def __init__(self, _path: str | None = None) -> None:
        import tantivy

        self._t = tantivy
        builder = tantivy.SchemaBuilder()
        builder.add_text_field("id", stored=False, tokenizer_name="raw", index_option="basic")
        builder.add_text_field("body", stored=False, tokenizer_name="default", index_option="freq")
        builder.add_bytes_field("doc", stored=True, indexed=False)
        self._schema = builder.build()
        if _path is None:  # tantivy cannot save a RAM index: build in a private directory
            self._dir: str = tempfile.mkdtemp(prefix="rao_envs-tantivy-")
            weakref.finalize(self, shutil.rmtree, self._dir, True)
            self._index = tantivy.Index(self._schema, path=self._dir)
            self._writable = True
        else:
            self._dir = _path
            self._index = tantivy.Index.open(_path)
            self._writable = False
        self._searcher = self._index.searcher()

    def add(self, docs: Iterable[Doc]) -> None:
        """Index ``docs`` in one commit (ids must be new)."""
        if not self._writable:
            raise SearchIndexError("this tantivy index was opened from disk (read-only); build a new one to add documents")
        t, seen = self._t, set()
        writer = self._index.writer(heap_size=self.HEAP, num_threads=1)
        for d in docs:
            if d.id in seen or (len(self) and self.get(d.id) is not None):
                raise ValueError(f"duplicate document id {d.id!r}")
            seen.add(d.id)
            doc = t.Document()
            doc.add_text("id", d.id)
            doc.add_text("body", f"{d.title}\n{d.text}")
            doc.add_bytes("doc", json.dumps([d.id, d.title, d.text], ensure_ascii=False).encode())
            writer.add_document(doc)
        writer.commit()
        writer.wait_merging_threads()
        self._index.reload()
        self._searcher = self._index.searcher()

    def search(self, query: str, k: int = 10) -> list[Hit]:
        """Top ``k`` by BM25 over title and text (module docstring: how queries are read)."""
        terms = query_terms(query)
        if not terms:
            return []
        t, schema = self._t, self._schema
        clauses = [(t.Occur.Should, t.Query.term_query(schema, "body", w)) for w in terms]
        q = clauses[0][1] if len(clauses) == 1 else t.Query.boolean_query(clauses)
        searcher = self._searcher
        out = []
        for score, addr in searcher.search(q, _clamp_k(k), count=False).hits:  # counting all matches defeats pruning
            doc_id, title, text = json.loads(searcher.doc(addr).get_first("doc"))
            out.append(Hit(doc_id, title, snippet(text), float(score)))
        return out

    def get(self, doc_id: str) -> Doc | None:
        """The document ``doc_id`` (an exact id; anything else is None)."""
        if not isinstance(doc_id, str) or not doc_id or len(doc_id) > 1000:
            return None
        searcher = self._searcher
        hits = searcher.search(self._t.Query.term_query(self._schema, "id", doc_id), 1, count=False).hits
        if not hits:
            return None
        return Doc(*json.loads(searcher.doc(hits[0][1]).get_first("doc")))

    def save(self, path: str | os.PathLike) -> None:
        """Copy the index files into ``path``/tantivy (lock files left out) and write meta.json."""
        dest = Path(path)
        _check_new_dir(dest)
        shutil.copytree(self._dir, dest / "tantivy", ignore=shutil.ignore_patterns("*.lock"))
        _write_meta(dest, self.backend, len(self))

    @classmethod
    def open(cls, path: str | os.PathLike) -> TantivyIndex:
        """Open a saved index (read-only)."""
        _read_meta(Path(path))
        return cls(str(Path(path) / "tantivy"))

    def __len__(self) -> int:
        """The number of documents."""
        return int(self._searcher.num_docs)


# ---------------------------------------------------------------------------- SQLite FTS5
class FTS5Index:
    """SQLite FTS5 backend (standard library): a contentless FTS5 index beside a documents table.

    FTS5 scores every document that matches any query word, so a query with a word found in
    a large share of the corpus (``born`` on every person's page) costs tens of milliseconds
    at 100k documents. When a query mixes such *head* words with rarer ones (document
    frequency at most :attr:`RARE_SHARE` of the corpus), the candidates are the documents
    holding a rare word, scored here with FTS5's own BM25 formula over *all* the query's
    words; documents that hold only head words are left out. Otherwise (only rare or only
    head words, or too many candidates) FTS5 ranks the plain ``OR`` query with ``bm25()``.
    """

    backend: ClassVar[str] = "fts5"
    RARE_SHARE = 0.01
    RARE_MIN = 50
    MAX_CANDIDATES = 2000

    def __init__(self, _conn: sqlite3.Connection | None = None) -> None:
        if _conn is None:
            _conn = sqlite3.connect(":memory:", check_same_thread=False)
            _conn.executescript(
                "CREATE TABLE docs(n INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, title TEXT NOT NULL, "
                "text TEXT NOT NULL, len INTEGER NOT NULL);"
                "CREATE VIRTUAL TABLE fts USING fts5(body, content='', tokenize='unicode61');"
                "CREATE VIRTUAL TABLE fts_vocab USING fts5vocab(fts, 'row');"
            )
        self._conn = _conn
        self._df: dict[str, int] = {}
        self._count()

    def _count(self) -> None:
        n, total = self._conn.execute("SELECT count(*), coalesce(sum(len), 0) FROM docs").fetchone()
        self._n, self._avgdl = int(n), (float(total) / n if n else 1.0)
        self._df.clear()

    def add(self, docs: Iterable[Doc]) -> None:
        """Index ``docs`` in one transaction, then merge the index segments."""
        conn, n0 = self._conn, self._n
        rows = []
        for i, d in enumerate(docs):
            rows.append((n0 + i, d.id, d.title, d.text, len(_WORD.findall(f"{d.title}\n{d.text}"))))
        try:
            with conn:
                conn.executemany("INSERT INTO docs(n, id, title, text, len) VALUES (?, ?, ?, ?, ?)", rows)
                conn.executemany("INSERT INTO fts(rowid, body) VALUES (?, ?)", ((r[0], f"{r[2]}\n{r[3]}") for r in rows))
                conn.execute("INSERT INTO fts(fts) VALUES ('optimize')")
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"duplicate document id: {exc}") from None
        self._count()

    def _doc_freq(self, word: str) -> int:
        df = self._df.get(word)
        if df is None:
            row = self._conn.execute("SELECT doc FROM fts_vocab WHERE term = ?", (word,)).fetchone()
            if len(self._df) > 100_000:
                self._df.clear()
            df = self._df[word] = 0 if row is None else int(row[0])
        return df

    def search(self, query: str, k: int = 10) -> list[Hit]:
        """Top ``k`` by BM25 (class docstring: how head words are handled)."""
        words = [w for w in query_terms(query) if self._doc_freq(w) > 0]
        if not words:
            return []
        k = _clamp_k(k)
        n = self._n
        cap = max(self.RARE_MIN, int(n * self.RARE_SHARE))
        rare = [w for w in words if self._df[w] <= cap]
        try:
            if rare and len(rare) < len(words):
                hits = self._rescored(words, rare, k)
                if hits is not None:
                    return hits
            ranked = self._conn.execute(
                "SELECT rowid, rank FROM fts WHERE fts MATCH ? ORDER BY rank LIMIT ?", (_or_query(words), k)
            ).fetchall()
        except sqlite3.OperationalError:  # cannot happen for quoted words; never let a query raise
            return []
        if not ranked:
            return []
        marks = ",".join("?" * len(ranked))
        rows = {r[0]: r[1:] for r in self._conn.execute(
            f"SELECT n, id, title, substr(text, 1, {2 * SNIPPET_CHARS}) FROM docs WHERE n IN ({marks})",
            [r[0] for r in ranked],
        )}
        return [Hit(rows[n][0], rows[n][1], snippet(rows[n][2]), -float(rank)) for n, rank in ranked]

    def _rescored(self, words: list[str], rare: list[str], k: int) -> list[Hit] | None:
        """BM25 over every query word for the documents holding a rare word (None: too many of them)."""
        rows = self._conn.execute(
            "SELECT d.n, d.id, d.title, d.text, d.len FROM fts JOIN docs d ON d.n = fts.rowid WHERE fts MATCH ? LIMIT ?",
            (_or_query(rare), self.MAX_CANDIDATES + 1),
        ).fetchall()
        if len(rows) > self.MAX_CANDIDATES:
            return None
        n, avgdl = self._n, self._avgdl
        # FTS5's bm25(): idf = log((N - df + 0.5) / (df + 0.5)), floored at 1e-6
        idf = {w: max(1e-6, math.log((n - self._df[w] + 0.5) / (self._df[w] + 0.5))) for w in words}
        scored = []
        for num, doc_id, title, text, length in rows:
            tf = Counter(w for w in _WORD.findall(f"{title}\n{text}".lower()) if w in idf)
            norm = K1 * (1 - B + B * length / avgdl)
            score = sum(idf[w] * c * (K1 + 1) / (c + norm) for w, c in tf.items())
            scored.append((-score, num, doc_id, title, text))
        scored.sort()
        return [Hit(doc_id, title, snippet(text), -neg) for neg, _num, doc_id, title, text in scored[:k]]

    def get(self, doc_id: str) -> Doc | None:
        """The document ``doc_id``, or None."""
        if not isinstance(doc_id, str):
            return None
        row = self._conn.execute("SELECT id, title, text FROM docs WHERE id = ?", (doc_id,)).fetchone()
        return None if row is None else Doc(*row)

    def save(self, path: str | os.PathLike) -> None:
        """Write ``path``/index.sqlite3 (SQLite's online backup) and meta.json."""
        dest = Path(path)
        _check_new_dir(dest)
        out = sqlite3.connect(dest / "index.sqlite3")
        try:
            self._conn.backup(out)
        finally:
            out.close()
        _write_meta(dest, self.backend, len(self))

    @classmethod
    def open(cls, path: str | os.PathLike) -> FTS5Index:
        """Open a saved index read-only (``immutable``: no locking, the file never changes)."""
        _read_meta(Path(path))
        uri = (Path(path).resolve() / "index.sqlite3").as_uri() + "?mode=ro&immutable=1"
        return cls(sqlite3.connect(uri, uri=True, check_same_thread=False))

    def __len__(self) -> int:
        """The number of documents."""
        return self._n


def _or_query(words: list[str]) -> str:
    """An FTS5 query matching any of ``words``, each a quoted string (so no word is syntax)."""
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


# ---------------------------------------------------------------------------- bm25s
class BM25sIndex:
    """bm25s backend (numpy, extra ``rao_envs[search]``): tokens from :func:`doc_terms`, Lucene BM25."""

    backend: ClassVar[str] = "bm25s"

    def __init__(self, _model: object | None = None, _docs: list[Doc] | None = None) -> None:
        import bm25s

        self._bm25s = bm25s
        self._model = _model
        self._docs: list[Doc] = list(_docs or [])
        self._by_id = {d.id: i for i, d in enumerate(self._docs)}

    def add(self, docs: Iterable[Doc]) -> None:
        """Add ``docs`` and rebuild the index over every document (bm25s indexes in one pass)."""
        new = list(docs)
        for d in new:
            if d.id in self._by_id:
                raise ValueError(f"duplicate document id {d.id!r}")
            self._by_id[d.id] = len(self._docs)
            self._docs.append(d)
        model = self._bm25s.BM25(k1=K1, b=B, method="lucene")
        model.index([doc_terms(f"{d.title}\n{d.text}") for d in self._docs], show_progress=False)
        self._model = model

    def search(self, query: str, k: int = 10) -> list[Hit]:
        """Top ``k`` by bm25s's Lucene BM25; words outside the vocabulary are skipped."""
        if self._model is None:
            return []
        vocab = self._model.vocab_dict
        terms = [w for w in query_terms(query) if w in vocab]
        if not terms:
            return []
        k = min(_clamp_k(k), len(self._docs))
        ids, scores = self._model.retrieve([terms], k=k, show_progress=False, n_threads=1)
        out = []
        for i, s in zip(ids[0].tolist(), scores[0].tolist()):
            if s > 0:
                d = self._docs[i]
                out.append(Hit(d.id, d.title, snippet(d.text), float(s)))
        return out

    def get(self, doc_id: str) -> Doc | None:
        """The document ``doc_id``, or None."""
        i = self._by_id.get(doc_id) if isinstance(doc_id, str) else None
        return None if i is None else self._docs[i]

    def save(self, path: str | os.PathLike) -> None:
        """Write bm25s's arrays to ``path``/bm25s, the documents to docs.jsonl, and meta.json."""
        dest = Path(path)
        _check_new_dir(dest)
        if self._model is not None:
            self._model.save(str(dest / "bm25s"), show_progress=False)
        with open(dest / "docs.jsonl", "w", encoding="utf-8") as f:
            for d in self._docs:
                f.write(json.dumps([d.id, d.title, d.text], ensure_ascii=False) + "\n")
        _write_meta(dest, self.backend, len(self))

    @classmethod
    def open(cls, path: str | os.PathLike) -> BM25sIndex:
        """Open a saved index (the arrays memory-mapped)."""
        import bm25s

        path = Path(path)
        _read_meta(path)
        with open(path / "docs.jsonl", encoding="utf-8") as f:
            docs = [Doc(*json.loads(line)) for line in f]
        model = bm25s.BM25.load(str(path / "bm25s"), mmap=True, show_progress=False) if (path / "bm25s").exists() else None
        return cls(model, docs)

    def __len__(self) -> int:
        """The number of documents."""
        return len(self._docs)


# ---------------------------------------------------------------------------- choosing and caching
BACKENDS: dict[str, tuple[type, str | None]] = {
    "tantivy": (TantivyIndex, "tantivy"),
    "fts5": (FTS5Index, None),
    "bm25s": (BM25sIndex, "bm25s"),
}
"""Backend name -> (class, the module it needs, or None for the standard library)."""


def available_backends() -> list[str]:
    """The backends whose dependencies are installed, fastest first."""
    return [name for name, (_, module) in BACKENDS.items() if module is None or importlib.util.find_spec(module)]


def default_backend() -> str:
    """``tantivy`` when installed, else ``fts5``."""
    return "tantivy" if "tantivy" in available_backends() else "fts5"


def _backend_class(backend: str | None) -> type:
    name = backend or default_backend()
    if name not in BACKENDS:
        raise SearchIndexError(f"unknown search backend {name!r}; choose one of {sorted(BACKENDS)}")
    cls, module = BACKENDS[name]
    if module is not None and importlib.util.find_spec(module) is None:
        extra = " (pip install 'rao_envs[search]')" if name == "bm25s" else f" (pip install {module})"
        raise SearchIndexError(f"search backend {name!r} needs the {module} package{extra}; installed: {available_backends()}")
    return cls


def create_index(backend: str | None = None) -> SearchIndex:
    """A new, empty index of ``backend`` (default: :func:`default_backend`)."""
    return _backend_class(backend)()


def open_index(path: str | os.PathLike) -> SearchIndex:
    """Open a saved index, whichever backend wrote it."""
    return _backend_class(_read_meta(Path(path))["backend"]).open(path)


def cached_index(
    name: str,
    docs: Callable[[], Iterable[Doc]],
    backend: str | None = None,
    root: str | os.PathLike | None = None,
) -> SearchIndex:
    """Open the index ``name`` from the cache, building it from ``docs()`` the first time.

    The index lives in ``root`` (default ``cache_dir("search")``) as
    ``{name}.{backend}[-{library major.minor}].v{FORMAT}`` (a library upgrade that changes its
    file format gets a fresh index) and is built atomically (:func:`~rao_envs.tools.cache.build_once`): a name must identify
    its documents exactly (e.g. a generator's seed, size and version).
    """
    backend = backend or default_backend()
    _backend_class(backend)
    if not re.fullmatch(r"[\w.-]+", name):
        raise SearchIndexError(f"index name {name!r} may use only letters, digits, '_', '-' and '.'")
    base = Path(root) if root is not None else cache_dir("search")

    def build(tmp: Path) -> None:
        index = create_index(backend)
        index.add(docs())
        index.save(tmp)

    module = BACKENDS[backend][1]
    lib = "" if module is None else "-" + ".".join(importlib.metadata.version(module).split(".")[:2])
    return open_index(build_once(base / f"{name}.{backend}{lib}.v{FORMAT}", build))
