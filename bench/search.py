"""``python -m bench.search``: indexing rate and query latency of the search backends, one run.

::

    python -m bench.search --messages 1000000 --backend both      # the figures in docs/capacity.md

For each backend: generate ``--messages`` synthetic chat messages (seeded, so every run and every
backend sees the same corpus), index them in batches of ``--batch`` (one transaction each, as
the indexer does) and report messages/s; then run a mix of query kinds, each ``--queries`` times,
as a user who sees ``--visible`` of the ``--channels`` channels, and report p50 / p99 / max per
kind and overall. PostgreSQL runs on a private server (``harness.postgres``, fsync on); SQLite
in a file in a temporary directory.

The corpus: a Zipf-distributed vocabulary (common English chat words, accented words, a long
tail of generated words), mentions (``<@u123>`` and ``@name``), URLs, 5 % of messages with a
file, channels in servers and direct channels. Query kinds::

    common      one frequent word                    rare       one word from the long tail
    two-words   two mid-frequency words (AND)        phrase     two adjacent words of a message, quoted
    prefix      the first three letters of a word*   accent     an accented word typed without accents
    mention     @user                                url        a URL's host
    channel     a common word, filtered to one channel
    next-page   the second page of a common word (cursor)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import sys
import tempfile
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mqchat.ids import EPOCH_MS, compose
from mqchat.search import SearchDoc, SearchFilters, SearchIndex, parse
from mqchat.search.postgres import PostgresSearchIndex
from mqchat.search.sqlite import SqliteSearchIndex

BACKENDS = ("sqlite", "postgresql")

_COMMON_WORDS = (
    "the to and a i you it is of that in we for this on be have can do not with just so are at was but "
    "what if like get know will all my me your think about up out now time good one there going see "
    "yes no ok okay thanks lol today tomorrow meeting call deploy build release fix bug issue review "
    "please update check working done need make sure let here new team week work back after before "
    "still also then should would could really right well great nice cool sounds morning lunch break "
    "coffee office remote laptop server database test tests branch merge main prod staging error logs "
    "customer ticket sprint demo slides doc docs link file image video design feedback plan schedule"
)
COMMON = _COMMON_WORDS.split()
"""Frequent chat words, most frequent first (the head of the Zipf distribution)."""
ACCENTED = ("café", "crème", "naïve", "résumé", "jalapeño", "Zürich", "São", "façade", "déjà", "über", "piñata",
            "señor", "mañana", "garçon", "Łódź", "smörgåsbord", "fiancée", "entrée", "coöperate", "Ærø")
DOMAINS = ("example.com", "docs.example.org", "github.com", "news.site.net", "wiki.internal", "cdn.files.io")
SYLLABLES = ("ka", "lo", "mi", "ne", "tor", "vel", "qua", "zi", "ran", "pe", "sto", "lu", "mar", "dex", "fi",
             "gon", "bri", "sha", "tul", "xo")


@dataclass(frozen=True)
class Params:
    messages: int
    batch: int
    channels: int
    servers: int
    users: int
    visible: int
    queries: int
    seed: int


@dataclass
class Corpus:
    """The synthetic world: vocabulary (rank order), users, channels and their servers."""

    params: Params
    rng: random.Random
    vocabulary: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    server_of: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def build(cls, params: Params) -> Corpus:
        rng = random.Random(params.seed)
        tail: set[str] = set()
        while len(tail) < 20_000:
            tail.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
        vocabulary = [*COMMON, *ACCENTED, *sorted(tail)]
        # Accented words sit among the mid-frequency ranks, not at the top.
        weights = [1.0 / (rank + 1) ** 1.05 for rank in range(len(vocabulary))]
        users = [f"u{i}" for i in range(params.users)]
        channels = [f"ch-{i}" for i in range(params.channels)]
        server_of = {c: (f"srv-{i % params.servers}" if i % 5 else None) for i, c in enumerate(channels)}
        return cls(params, rng, vocabulary, weights, users, channels, server_of)

    def words(self, n: int) -> list[str]:
        return self.rng.choices(self.vocabulary, weights=self.weights, k=n)

    def body(self) -> str:
        rng = self.rng
        parts = self.words(rng.randint(3, 24))
        roll = rng.random()
        if roll < 0.08:
            parts.insert(rng.randrange(len(parts) + 1), f"<@{rng.choice(self.users)}>")
        elif roll < 0.14:
            parts.insert(rng.randrange(len(parts) + 1), f"@{rng.choice(self.users)}")
        if rng.random() < 0.05:
            path = "/".join(self.words(rng.randint(1, 3)))
            parts.append(f"https://{rng.choice(DOMAINS)}/{path}")
        if rng.random() < 0.3:
            parts[0] = parts[0].capitalize()
        return " ".join(parts)

    def docs(self) -> Iterator[list[SearchDoc]]:
        """The corpus in batches; ids are Snowflakes and ``ts`` grows with them."""
        p, rng = self.params, self.rng
        ts = EPOCH_MS + 86_400_000
        batch: list[SearchDoc] = []
        for i in range(p.messages):
            ts += rng.randint(1, 120)
            channel = self.channels[min(int(rng.paretovariate(1.2)) - 1, p.channels - 1)
                                    if rng.random() < 0.5 else rng.randrange(p.channels)]
            batch.append(SearchDoc(id=compose(ts, 1, i % 4096), channel=channel, sender=rng.choice(self.users),
                                   ts=ts, seq=i, body=self.body(), server=self.server_of[channel],
                                   has_file=rng.random() < 0.05))
            if len(batch) == p.batch:
                yield batch
                batch = []
        if batch:
            yield batch


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


def query_kinds(corpus: Corpus) -> dict[str, Callable[[list[str]], tuple[str, SearchFilters, bool]]]:
    """Each kind makes (query text, filters, whether to fetch the second page) for a visible set."""
    rng, vocab = corpus.rng, corpus.vocabulary
    common = COMMON[:60]
    mid = vocab[len(COMMON) + len(ACCENTED): len(COMMON) + len(ACCENTED) + 300]
    rare = vocab[-5_000:]

    def phrase(_: list[str]) -> tuple[str, SearchFilters, bool]:
        words = corpus.words(2)
        return f'"{words[0]} {words[1]}"', SearchFilters(), False

    return {
        "common": lambda _: (rng.choice(common), SearchFilters(), False),
        "rare": lambda _: (rng.choice(rare), SearchFilters(), False),
        "two-words": lambda _: (f"{rng.choice(mid)} {rng.choice(common)}", SearchFilters(), False),
        "phrase": phrase,
        "prefix": lambda _: (rng.choice(mid)[:3] + "*", SearchFilters(), False),
        "accent": lambda _: (strip_accents(rng.choice(ACCENTED)).lower(), SearchFilters(), False),
        "mention": lambda _: (f"@{rng.choice(corpus.users)}", SearchFilters(), False),
        "url": lambda _: (rng.choice(DOMAINS), SearchFilters(), False),
        "channel": lambda visible: (rng.choice(common), SearchFilters(channel=rng.choice(visible)), False),
        "next-page": lambda _: (rng.choice(common), SearchFilters(), True),
    }


def percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


@contextlib.asynccontextmanager
async def opened(backend: str, workdir: Path) -> AsyncIterator[tuple[SearchIndex, Callable[[], Awaitable[int]]]]:
    """The backend's empty index and a function giving its size on disk (bytes)."""
    if backend == "sqlite":
        path = workdir / "search.db"
        sqlite_index = await SqliteSearchIndex.open(path)

        async def file_size() -> int:
            return await asyncio.to_thread(lambda: sum(p.stat().st_size for p in workdir.glob("search.db*")))

        try:
            yield sqlite_index, file_size
        finally:
            await sqlite_index.close()
        return
    from harness.postgres import running

    with running(durable=True) as server:
        pg_index = await PostgresSearchIndex.open(server.dsn, max_size=2)

        async def size() -> int:
            import psycopg

            async with await psycopg.AsyncConnection.connect(server.dsn) as conn:
                row = await (await conn.execute("SELECT pg_total_relation_size('search_docs')")).fetchone()
            return int(row[0]) if row else 0

        try:
            yield pg_index, size
        finally:
            await pg_index.close()


async def run_backend(backend: str, params: Params, workdir: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    corpus = Corpus.build(params)  # rebuilt per backend: the same seed gives the same corpus
    async with opened(backend, workdir) as (index, size):
        started = time.perf_counter()
        batch_ms: list[float] = []
        done = 0
        gen_s = 0.0
        g0 = time.perf_counter()
        for batch in corpus.docs():
            t0 = time.perf_counter()
            gen_s += t0 - g0
            await index.index(batch)
            g0 = time.perf_counter()
            batch_ms.append((g0 - t0) * 1000)
            done += len(batch)
            if len(batch_ms) % 50 == 0:
                progress(f"{backend}: indexed {done:,}/{params.messages:,}")
        index_s = time.perf_counter() - started - gen_s
        assert await index.count() == params.messages
        on_disk = await size()

        rng = random.Random(params.seed + 1)
        corpus.rng = rng
        visible = rng.sample(corpus.channels[: max(params.visible * 4, 1)], k=params.visible)
        kinds = query_kinds(corpus)
        latencies: dict[str, list[float]] = {}
        found: dict[str, int] = {}
        for kind, make in kinds.items():
            for _ in range(3):  # warm the caches and the planner
                text, filters, _next = make(visible)
                await index.search(parse(text), visible_channels=visible, filters=filters)
            samples = latencies[kind] = []
            found[kind] = 0
            for _ in range(params.queries):
                text, filters, second = make(visible)
                query = parse(text)
                t0 = time.perf_counter()
                page = await index.search(query, visible_channels=visible, filters=filters)
                if second and page.cursor:
                    t0 = time.perf_counter()  # measure the second page alone
                    page = await index.search(query, visible_channels=visible, filters=filters, cursor=page.cursor)
                samples.append((time.perf_counter() - t0) * 1000)
                found[kind] += len(page.hits)
            progress(f"{backend}: {kind} queries done")
        everything = sorted(ms for samples in latencies.values() for ms in samples)
        batch_ms.sort()
        return {
            "index": {"messages": params.messages, "seconds": index_s, "msgs_per_s": params.messages / index_s,
                      "batch_p50_ms": percentile(batch_ms, 0.5), "batch_p99_ms": percentile(batch_ms, 0.99),
                      "bytes_on_disk": on_disk},
            "queries": {kind: {"n": len(s), "p50_ms": percentile(sorted(s), 0.5),
                               "p99_ms": percentile(sorted(s), 0.99), "max_ms": max(s),
                               "mean_hits": found[kind] / len(s)} for kind, s in latencies.items()},
            "all_queries": {"n": len(everything), "p50_ms": percentile(everything, 0.5),
                            "p99_ms": percentile(everything, 0.99), "max_ms": everything[-1]},
        }


def table(results: dict[str, dict[str, Any]]) -> str:
    backends = list(results)
    rows = [("figure", *backends)]
    rows.append(("index msgs/s", *(f"{results[b]['index']['msgs_per_s']:,.0f}" for b in backends)))
    rows.append(("batch p50 / p99 ms", *(f"{results[b]['index']['batch_p50_ms']:.1f} / "
                                          f"{results[b]['index']['batch_p99_ms']:.1f}" for b in backends)))
    rows.append(("size on disk MiB", *(f"{results[b]['index']['bytes_on_disk'] / 2**20:,.1f}" for b in backends)))
    rows.append(("all queries p50 / p99 ms", *(f"{results[b]['all_queries']['p50_ms']:.2f} / "
                                                f"{results[b]['all_queries']['p99_ms']:.2f}" for b in backends)))
    for kind in results[backends[0]]["queries"]:
        rows.append((f"  {kind} p50 / p99 ms (hits)", *(
            f"{q['p50_ms']:.2f} / {q['p99_ms']:.2f} ({q['mean_hits']:.0f})"
            for q in (results[b]["queries"][kind] for b in backends))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths,
                                                                                                  strict=True)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000, help="messages to index (default 100,000)")
    ap.add_argument("--backend", choices=[*BACKENDS, "both"], default="both")
    ap.add_argument("--batch", type=int, default=1_000, help="messages per index() call (default 1,000)")
    ap.add_argument("--channels", type=int, default=2_000, help="channels in the corpus (default 2,000)")
    ap.add_argument("--servers", type=int, default=100, help="servers the channels belong to (default 100)")
    ap.add_argument("--users", type=int, default=10_000, help="senders and mention targets (default 10,000)")
    ap.add_argument("--visible", type=int, default=60, help="channels the searching user sees (default 60)")
    ap.add_argument("--queries", type=int, default=100, help="queries per kind (default 100)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, default=Path("bench-results/search.json"), metavar="PATH",
                    help="where to write the figures (default bench-results/search.json)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.messages < 1 or args.batch < 1 or args.queries < 1:
        parser().error("--messages, --batch and --queries must be positive")
    if not 1 <= args.visible <= args.channels or args.servers < 1 or args.users < 1:
        parser().error("--visible must be 1..--channels; --servers and --users positive")
    params = Params(messages=args.messages, batch=args.batch, channels=args.channels, servers=args.servers,
                    users=args.users, visible=args.visible, queries=args.queries, seed=args.seed)
    backends = BACKENDS if args.backend == "both" else (args.backend,)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results: dict[str, dict[str, Any]] = {}
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="mqchat-search-bench-") as workdir:
            results[backend] = asyncio.run(run_backend(backend, params, Path(workdir), progress))
    print(table(results))
    report = {"params": vars(params), "results": results,
              "meta": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                       "load_avg": os.getloadavg(), "command": " ".join(["python -m bench.search", *(argv or
                                                                                                    sys.argv[1:])])}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
