# SPDX-License-Identifier: Apache-2.0
"""City-index search latency (issue 20): numpy (what ``CityIndex.search`` does: one matrix-vector product and a
partial sort) against faiss (exact ``IndexFlatIP``; approximate ``IndexHNSWFlat``) at 10^4, 10^5, 10^6 entries,
one query at a time on one thread, as the node searches. Descriptors are random unit vectors (latency does not
depend on their values; HNSW's recall does, and is reported against the exact top 5 only as a sanity check).

    OMP_NUM_THREADS=1 python bench/retrieval_search.py [--dim 128] [--queries 200] [--hnsw-max 100000] [--record]

faiss is optional (``pip install faiss-cpu``); without it only the numpy rows are measured.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, List  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import results  # noqa: E402
from xview_loc_ros.retrieval import CityIndex, IndexGrid  # noqa: E402

SECTION = "## City-index search latency: numpy vs faiss (issue 20)"
K = 5


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def timed(fn: Callable[[np.ndarray], np.ndarray], queries: np.ndarray) -> tuple:
    fn(queries[0])  # warm-up
    ts, tops = [], []
    for q in queries:
        t0 = time.perf_counter()
        tops.append(fn(q))
        ts.append(time.perf_counter() - t0)
    ms = np.array(ts) * 1e3
    return float(np.median(ms)), float(np.percentile(ms, 95)), tops


def measure(n: int, args: argparse.Namespace, rng: np.random.Generator, faiss) -> List[tuple]:
    """The rows of one index size: (entries, what, median ms, p95 ms, result, note)."""
    rows = []
    desc = unit(rng, n, args.dim)
    q = unit(rng, args.queries, args.dim)
    side = int(np.ceil(np.sqrt(n)))
    en = np.stack(np.divmod(np.arange(n), side), 1).astype(np.float64) * 10.0
    index = CityIndex(IndexGrid(37.77, -122.42, 1e6, 10.0, 0.5, 128), "0" * 64, "", en, desc)

    def numpy_topk(v: np.ndarray) -> np.ndarray:
        s = desc @ v
        top = np.argpartition(-s, K - 1)[:K]
        return top[np.argsort(-s[top])]

    med, p95, exact = timed(numpy_topk, q)
    rows.append((n, "numpy matmul + argpartition", med, p95, "exact", ""))
    med, p95, _ = timed(lambda v: np.array([c.entry for c in index.search(v, K)]), q)
    rows.append((n, "CityIndex.search (numpy, all entries, + lat/lon of the 5)", med, p95, "exact", ""))
    med, p95, _ = timed(lambda v: np.array([c.entry for c in index.search(v, K, (0.0, 0.0), 2000.0)]), q)
    rows.append((n, "CityIndex.search within 2 km of a prior (distance filter first)", med, p95, "exact", ""))
    if faiss is not None:
        flat = faiss.IndexFlatIP(args.dim)
        flat.add(desc)
        med, p95, _ = timed(lambda v: flat.search(v[None], K)[1][0], q)
        rows.append((n, "faiss IndexFlatIP", med, p95, "exact", ""))
        if n <= args.hnsw_max:
            t0 = time.perf_counter()
            hnsw = faiss.IndexHNSWFlat(args.dim, 32, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efSearch = 64
            hnsw.add(desc)
            build = time.perf_counter() - t0
            med, p95, got = timed(lambda v: hnsw.search(v[None], K)[1][0], q)
            rec = np.mean([len(set(a.tolist()) & set(b.tolist())) / K for a, b in zip(exact, got)])
            rows.append(
                (
                    n,
                    "faiss IndexHNSWFlat (M 32, efSearch 64)",
                    med,
                    p95,
                    f"top-5 recall {rec:.2f}",
                    f"build {build:.0f} s",
                )
            )
    return rows


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--hnsw-max", type=int, default=100_000, help="largest index built with HNSW (its build is slow)")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args(argv)
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:
        faiss = None
    rng = np.random.default_rng(0)
    rows: List[tuple] = []
    for n in args.sizes:
        rows += measure(n, args, rng, faiss)
        for r in rows[-5:]:
            if r[0] == n:
                print(f"{r[0]:>9} {r[1]:<66} median {r[2]:8.3f} ms  p95 {r[3]:8.3f} ms  {r[4]} {r[5]}", flush=True)
    lines = [
        f"D = {args.dim}, float32 unit descriptors, {args.queries} single queries per size, top {K}, one thread "
        f"(OMP/BLAS/faiss), faiss {'%s' % faiss.__version__ if faiss is not None else 'not installed'}.",
        "",
        "| entries | search | median (ms) | p95 (ms) | result | note |",
        "|---:|---|---:|---:|---|---|",
    ]
    lines += [f"| {n:,} | {what} | {med:.3f} | {p95:.3f} | {res} | {note} |" for n, what, med, p95, res, note in rows]
    body = "\n".join(lines)
    print(body)
    if args.record:
        results.record(
            SECTION, body, command="OMP_NUM_THREADS=1 python " + " ".join(["bench/retrieval_search.py", *argv])
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
