# SPDX-License-Identifier: Apache-2.0
"""Wide-area retrieval measured on the product path (issue 20): Recall@1/@5 within 25 m of a ground image's
position among the aerial patches of a city index, over 400 m x 400 m and 1 km x 1 km search areas.

Per target city (``--size-m`` metres square, a target style the source model never saw): the west district
(x < -60 m) is driven ``--adapt-drives`` times -> ``xview-adapt extract`` without the GT topic -> the label-free
``xview-adapt train-retrieval``; the east district (x > +60 m) is driven once more for the held-out queries
(extracted with the GT topic, which is used only to score). One city index (``xview-adapt index-map``) per
model covers the city; a search area is a square of side L whose centre is the query's true position moved by
a uniform offset in [-L/4, L/4] per axis (seeded), clipped to the city, and only index entries inside it
compete. A hit: an entry within 25 m of the true position among the top k.

Models (all the ``small`` teacher's backbones with a retrieval head): the source-trained head
(``train-retrieval --labels gt`` on source-style cities), the label-free head trained on the target city from
the source-trained one, the GT-supervised reference (``--labels gt`` on the same target drives), and ablations
(``--ablation LABEL=FLAGS``, flags of ``train-retrieval`` on top of the label-free defaults).

    python bench/retrieval.py --teacher models/teacher.pt --city t1:downtown:402 --city t2:oldtown:401 \
        --out bench/out/retrieval [--record]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import results  # noqa: E402
from offline_adapt.data.dataset import PairDataset  # noqa: E402
from xview_loc_ros.geo import LocalENU  # noqa: E402
from xview_loc_ros.retrieval import load_index  # noqa: E402
from xview_testbed.steps import StepRunner  # noqa: E402

SECTION = "## Wide-area retrieval: city index, label-free training (issue 20)"
GAP_M = 60.0
HIT_M = 25.0
LAT0, LON0 = 37.7749, -122.4194  # the synthetic cities' centre (xview_testbed.synth defaults)
EX = ["--size", 128, "--mpp", 0.5, "--ground-type", "panorama", "--ground-size", 64, 256, "--no-progress"]


class City:
    """One city: its tiles, drives and pair sets (made or reused)."""

    def __init__(self, r: StepRunner, out: Path, name: str, style: str, seed: int, args: argparse.Namespace) -> None:
        self.r, self.name, self.size_m = r, name, args.size_m
        self.dir = d = out / name
        self.city = r.run(
            d / "city", "xview-loc", "synth", "city", "--style", style, "--seed", seed, "--size-m", args.size_m,
            "--zooms", "17-18", "--out", d / "city",
        )  # fmt: skip
        self.tiles = f"xyz:{self.city / 'tiles'}"
        inner = args.size_m / 2 - 40.0
        west = f"{-inner:g},{-inner:g},{-GAP_M:g},{inner:g}"
        east = f"{GAP_M:g},{-inner:g},{inner:g},{inner:g}"
        bags = [self.drive(f"adapt{k}", west, k, args.adapt_frames) for k in range(1, args.adapt_drives + 1)]
        ex = ["--tiles", self.tiles, *EX]
        self.unlabelled = r.run(
            d / "adapt_pairs", "xview-adapt", "extract", "--bag", *bags, *ex, "--out", d / "adapt_pairs"
        )
        self.labelled = r.run(
            d / "adapt_pairs_gt", "xview-adapt", "extract", "--bag", *bags, *ex, "--gt-topic", "/ground_truth/fix",
            "--out", d / "adapt_pairs_gt",
        )  # fmt: skip
        bag = self.drive("drive_test", east, 11, args.test_frames)
        self.test = r.run(
            d / "test", "xview-adapt", "extract", "--bag", bag, *ex, "--gt-topic", "/ground_truth/fix",
            "--out", d / "test",
        )  # fmt: skip

    def drive(self, name: str, region: str, seed: int, frames: int) -> Path:
        return self.r.run(
            self.dir / name, "xview-loc", "synth", "drive", "--city", self.city, "--out", self.dir / name,
            "--frames", frames, "--rate", 1, "--seed", seed, f"--region={region}",
        )  # fmt: skip


def source_sets(r: StepRunner, out: Path, args: argparse.Namespace) -> List[Path]:
    """Source-style cities (the teacher's styles, other seeds) and drive-like labelled pairs."""
    data = []
    for style in ("suburb", "industrial"):
        city = r.run(
            out / f"source_city_{style}", "xview-loc", "synth", "city", "--style", style, "--seed", 111,
            "--randomize", 1.0, "--size-m", 400, "--zooms", "17-18", "--out", out / f"source_city_{style}",
        )  # fmt: skip
        data.append(
            r.run(
                out / f"source_pairs_{style}",
                "xview-loc",
                "synth",
                "pairs",
                "--city",
                city,
                "--n",
                args.source_pairs,
                "--seed",
                111,
                "--like-drive",
                "--out",
                out / f"source_pairs_{style}",
            )  # fmt: skip
        )
    return data


def train(r: StepRunner, out: Path, model: Path, data: List[Path], tiles: List[str], flags: List[str], th) -> Path:
    r.run(
        out, "xview-adapt", "train-retrieval", "--data", *data, "--tiles", *tiles, "--model", model,
        "--out", out, *flags, *th, "--no-progress",
    )  # fmt: skip
    return out


def index(r: StepRunner, c: City, model: Path, name: str, stride: float, th) -> Path:
    """The city index of ``model`` over the whole city (the disc around its centre, less what lacks imagery)."""
    out = c.dir / f"index_{name}.npz"
    return r.run(
        out, "xview-adapt", "index-map", "--model", model, "--tiles", c.tiles, "--center", f"{LAT0},{LON0}",
        "--radius-m", f"{c.size_m / 2 * np.sqrt(2):.0f}", "--stride-m", stride, "--out", out, "--no-progress", *th,
    )  # fmt: skip


def queries(model: Path, data: Path) -> Tuple[np.ndarray, np.ndarray]:
    """(ground descriptors (Q,D), true east/north (Q,2) in the index frame) of a test set's frames."""
    from xview_loc_ros import preprocess
    from xview_loc_ros.inference import open_backend

    backend = open_backend(model, "torch", device="cpu", threads=1)
    ds = PairDataset(data)
    recs = [r for r in ds.split(None) if r.has_gt]
    g = np.stack([preprocess.prepare_ground(ds.load_ground(r), r.heading_deg, backend.config) for r in recs])
    desc = np.concatenate([backend.encode_ground(g[i : i + 32]) for i in range(0, len(g), 32)])
    e, n, _ = LocalENU(LAT0, LON0).to_enu(np.array([r.gt_lat for r in recs]), np.array([r.gt_lon for r in recs]))
    return desc, np.stack([e, n], 1)


def recall(idx_path: Path, desc: np.ndarray, truth: np.ndarray, side: float, half_city: float, seed: int) -> Dict:
    """Recall@1/@5 (a top-k entry within HIT_M of the truth) over square search areas of ``side`` metres."""
    index = load_index(idx_path)
    rng = np.random.default_rng(seed)
    hits1, hits5, sizes, ms, reachable = [], [], [], [], []
    lim = max(0.0, half_city - side / 2)
    for q, t in zip(desc, truth):
        centre = np.clip(t + rng.uniform(-side / 4, side / 4, 2), -lim, lim)
        inside = np.all(np.abs(index.east_north - centre) <= side / 2, axis=1)
        ent = np.flatnonzero(inside)
        t0 = time.perf_counter()
        scores = index.descriptors[ent] @ q
        top = ent[np.argsort(-scores)[:5]]
        ms.append((time.perf_counter() - t0) * 1e3)
        d = np.hypot(*(index.east_north[top] - t).T)
        hits1.append(bool(d[0] <= HIT_M))
        hits5.append(bool((d <= HIT_M).any()))
        sizes.append(len(ent))
        reachable.append(bool((np.hypot(*(index.east_north[ent] - t).T) <= HIT_M).any()))
    return {
        "r1": 100 * float(np.mean(hits1)),
        "r5": 100 * float(np.mean(hits5)),
        "entries": int(np.median(sizes)),
        "ms": float(np.median(ms)),
        "reachable": 100 * float(np.mean(reachable)),
        "n": len(hits1),
    }


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--city", action="append", required=True, metavar="NAME:STYLE:SEED", help="a target city")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "retrieval")
    ap.add_argument("--size-m", type=float, default=1100.0)
    ap.add_argument("--adapt-drives", type=int, default=2)
    ap.add_argument("--adapt-frames", type=int, default=150)
    ap.add_argument("--test-frames", type=int, default=150)
    ap.add_argument("--source-pairs", type=int, default=300)
    ap.add_argument("--stride-m", type=float, default=10.0, help="index grid step")
    ap.add_argument("--areas", type=float, nargs="+", default=[400.0, 1000.0], help="search-area sides, metres")
    ap.add_argument("--ablation", action="append", default=[], metavar="LABEL=FLAGS", help="more label-free rows")
    ap.add_argument(
        "--ablation-cities", nargs="*", default=None, help="cities that get the ablation rows (default all)"
    )
    ap.add_argument("--source-flags", default="", help="more train-retrieval flags for the source-trained head")
    ap.add_argument("--tag", default="", help="suffix of the model and index files (variants side by side)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--prepare-only", action="store_true", help="make the cities, drives and data sets, then stop")
    args = ap.parse_args(argv)
    r = StepRunner(args.out)
    th = ["--threads", args.threads]
    src_data = source_sets(r, args.out, args)
    cities = []
    for spec in args.city:
        name, style, seed = spec.split(":")
        cities.append((name, style, seed, City(r, args.out, name, style, int(seed), args)))
    if args.prepare_only:
        return 0
    src_tiles = [f"xyz:{args.out / f'source_city_{s}' / 'tiles'}" for s in ("suburb", "industrial")]
    tag = args.tag
    source = train(
        r, args.out / f"source_head{tag}.pt", args.teacher.resolve(), src_data, src_tiles,
        ["--labels", "gt", *shlex.split(args.source_flags)], th,
    )  # fmt: skip
    text = [
        f"Source-trained head: `train-retrieval --labels gt` on the teacher's source styles (suburb, industrial: one "
        f"400 m city each, {args.source_pairs} drive-like pairs each), from `models/teacher.pt` (backbones frozen"
        f"{'; ' + args.source_flags if args.source_flags else ''}). "
        f"Index stride {args.stride_m:g} m over the whole {args.size_m:g} m city; a hit is a top-k entry within "
        f"{HIT_M:g} m of the true position; 'reachable' = areas holding an entry within {HIT_M:g} m.",
    ]
    for name, style, seed, c in cities:
        rows: Dict[str, Path] = {"source-trained head": source}
        rows["label-free (defaults)"] = train(
            r, c.dir / f"label_free{tag}.pt", source, [c.unlabelled], [c.tiles], [], th
        )
        if args.ablation_cities is None or name in args.ablation_cities:
            for spec in args.ablation:
                label, _, flags = spec.partition("=")
                key = "".join(ch if ch.isalnum() else "_" for ch in label)
                rows[f"label-free, {label}"] = train(
                    r, c.dir / f"lf_{key}{tag}.pt", source, [c.unlabelled], [c.tiles], shlex.split(flags), th
                )
        rows["GT-supervised reference"] = train(
            r, c.dir / f"gt_ref{tag}.pt", source, [c.labelled], [c.tiles], ["--labels", "gt"], th
        )
        n_adapt = len(PairDataset(c.unlabelled).split(None))
        lines = [
            f"**{name}** (`{style}` seed {seed}, {c.size_m:g} m): {n_adapt} unlabelled adaptation pairs (west "
            f"district), held-out queries from the east district.",
            "",
            "| model | " + " | ".join(f"{a:g} m x {a:g} m: R@1 / R@5 (%)" for a in args.areas) + " |",
            "|---|" + "---|" * len(args.areas),
        ]
        extra = []
        for label, model in rows.items():
            key = model.stem if model != source else f"source{tag}"
            idx = index(r, c, model, key, args.stride_m, th)
            desc, truth = queries(model, c.test)
            res = [recall(idx, desc, truth, a, c.size_m / 2 - 10.0, 0) for a in args.areas]
            lines.append(f"| {label} | " + " | ".join(f"{x['r1']:.1f} / {x['r5']:.1f}" for x in res) + " |")
            if label == "source-trained head":
                extra = [
                    f"{a:g} m areas: median {x['entries']} entries, scoring + sort median {x['ms']:.2f} ms, "
                    f"reachable {x['reachable']:.0f} % ({x['n']} queries)"
                    for a, x in zip(args.areas, res)
                ]
        lines += ["", "; ".join(extra) + "."]
        text.append("\n".join(lines))
        print(text[-1], flush=True)
    times = [f"{k}: {v:.0f} s" for k, v in r.times.items() if "train-retrieval" in k or "index-map" in k]
    body = "\n\n".join(text)
    (args.out / "table.md").write_text(body + "\n")
    print("\n".join(times))
    if args.record:
        results.record(SECTION, body, command="python " + " ".join(["bench/retrieval.py", *argv]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
