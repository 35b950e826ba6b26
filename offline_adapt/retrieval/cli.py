# SPDX-License-Identifier: Apache-2.0
"""``xview-adapt index-map`` (a city index of a model's aerial descriptors) and ``xview-adapt train-retrieval``
(the retrieval head, label-free on a target city's pairs); the work is in :mod:`.index_map` and
:mod:`.train_retrieval`."""

from __future__ import annotations

import argparse
import json
import sys

from offline_adapt.data.dataset import PairDataset
from offline_adapt.retrieval.index_map import build_index
from offline_adapt.retrieval.options import IndexMapOptions, TrainRetrievalOptions, parse_center
from offline_adapt.retrieval.train_retrieval import train_retrieval
from xview_loc_ros.cli import fraction, non_negative_float, non_negative_int, positive_float, positive_int
from xview_loc_ros.inference import has_retrieval, open_backend
from xview_loc_ros.tiles import open_tile_source

_I = IndexMapOptions(center=(0.0, 0.0), radius_m=1.0, stride_m=1.0)
_T = TrainRetrievalOptions()


def _open_tiles(spec: str):

    try:
        return open_tile_source(spec)
    except (ValueError, OSError) as e:
        raise ValueError(f"--tiles {spec!r}: {e}") from e


def _index_handler(args: argparse.Namespace) -> int:
    opts = IndexMapOptions(
        center=parse_center(args.center),
        radius_m=args.radius_m,
        stride_m=args.stride_m,
        batch=args.batch,
        chunk=args.chunk,
        max_missing=args.max_missing,
        threads=args.threads,
    )
    source = _open_tiles(args.tiles)

    backend = open_backend(args.model, args.backend, device=args.device, threads=args.threads)
    if not has_retrieval(backend.config):
        raise ValueError(
            f"{args.model}: this model has no retrieval head (config retrieval_dim); train one with "
            "`xview-adapt train-retrieval`"
        )
    print(f"index-map: {backend.describe()}", file=sys.stderr)
    summary = build_index(args.model, backend, source, args.tiles, args.out, opts, progress=not args.no_progress)
    print(
        f"wrote {args.out}: {summary['entries']} entries ({summary['left_out']} of {summary['grid_points']} grid "
        f"points left out: no imagery), D={summary['dim']}, {summary['seconds']:.1f} s"
        + (f", resumed after {summary['resumed_chunks']} chunk(s)" if summary["resumed_chunks"] else "")
    )
    return 0


def _train_handler(args: argparse.Namespace) -> int:
    opts = TrainRetrievalOptions(
        labels=args.labels,
        positives=args.positives,
        mutual_nn=args.mutual_nn == "on",
        mutual_nn_m=args.mutual_nn_m,
        mutual_nn_radius_m=args.mutual_nn_radius_m,
        rounds=args.rounds,
        epochs=args.epochs,
        candidate_radius_m=args.candidate_radius_m,
        candidate_step_m=args.candidate_step_m,
        jitter_m=args.jitter_m,
        negative_exclude_m=args.negative_exclude_m,
        consistency=args.consistency,
        freeze_backbone=args.freeze_backbone,
        batch=args.batch,
        lr=args.lr,
        temperature=args.temperature,
        seed=args.seed,
        retrieval_dim=args.retrieval_dim,
        retrieval_pool=args.retrieval_pool,
        threads=args.threads,
    )
    tiles = list(args.tiles or [])
    if len(tiles) == 1:
        tiles = tiles * len(args.data)
    elif not tiles:
        for d in args.data:
            spec = ((PairDataset(d).meta.extra or {}).get("extract") or {}).get("tiles")
            if not spec:
                raise ValueError(f"{d}: the data set does not record its tile source; pass --tiles SPEC")
            tiles.append(spec)
    if len(tiles) != len(args.data):
        raise ValueError(
            f"--tiles: give one SPEC for all data sets or one per --data ({len(args.data)}), got {len(tiles)}"
        )
    sources = [_open_tiles(t) for t in tiles]
    summary = train_retrieval(args.model, args.data, sources, args.out, opts, progress=not args.no_progress)
    print(json.dumps(summary["rounds"]))
    print(f"wrote {args.out}: retrieval head trained on {summary['pairs']} pairs in {summary['seconds']:.0f} s")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index-map",
        help="city index: the model's descriptors of aerial patches on a grid over an area",
        description="Cut north-up aerial patches (the model's size and m/px, the node's patch code) every "
        "--stride-m metres east/north of --center within --radius-m metres, run them through the model's retrieval "
        "head and write the city index (.npz: descriptors, patch centres, the grid's geo-reference and the sha256 of "
        "--model). Build it from the very file the node loads (.pt, .onnx): an index of student.pt does not match "
        "student.onnx. Resumable: an interrupted build continues from OUT.work/.",
    )
    p.add_argument("--model", required=True, help="model file with a retrieval head (.pt checkpoint or .onnx)")
    p.add_argument("--tiles", required=True, help="tile source SPEC (as the node's --tiles)")
    p.add_argument("--center", required=True, metavar="LAT,LON", help="centre of the area, WGS84 degrees")
    p.add_argument("--radius-m", type=positive_float, required=True, help="radius of the area (a disc), metres")
    p.add_argument("--stride-m", type=positive_float, required=True, help="grid step between patch centres, metres")
    p.add_argument("--out", required=True, help="index file to write (.npz)")
    p.add_argument(
        "--batch", type=positive_int, default=_I.batch, help=f"patches per network call (default {_I.batch})"
    )
    p.add_argument(
        "--chunk", type=positive_int, default=_I.chunk, help=f"entries per resumable work file (default {_I.chunk})"
    )
    p.add_argument(
        "--max-missing",
        type=fraction,
        default=_I.max_missing,
        help=f"leave out patches missing more than this fraction of imagery (default {_I.max_missing:g})",
    )
    p.add_argument("--backend", default="auto", help="torch, onnxruntime, tensorrt or auto (default)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: best available)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (torch, ONNX Runtime)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_index_handler)

    t = sub.add_parser(
        "train-retrieval",
        help="train the retrieval head on a target city's unlabelled pairs (label-free)",
        description="Train the retrieval head (ground and aerial descriptors) from unlabelled target pairs (the "
        "extractor's output, no GT topic): positives are patches around the GNSS fix or the fine model's own "
        "heat-map mode, re-assigned over EM rounds among nearby candidates by the current model's similarity and "
        "cleaned by mutual nearest neighbours; symmetric InfoNCE with in-batch negatives; a feature-consistency "
        "term when the backbones train. --labels gt is the supervised reference (and trains a source model's head "
        "on labelled source pairs). A model without a head gets one (--retrieval-dim).",
    )
    t.add_argument("--data", required=True, nargs="+", help="pair data set(s) (the extractor's output)")
    t.add_argument("--model", required=True, help="checkpoint (.pt) to start from (with or without a retrieval head)")
    t.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    t.add_argument(
        "--tiles",
        nargs="+",
        help="tile source SPEC for the candidate patches: one for all data sets or one per --data "
        "(default: the one each data set was extracted with)",
    )
    t.add_argument(
        "--labels",
        choices=("none", "gt"),
        default=_T.labels,
        help="none: label-free (default); gt: positives at the true position (reference)",
    )
    t.add_argument(
        "--positives",
        choices=("fix", "heatmap"),
        default=_T.positives,
        help=f"label-free base centre (default {_T.positives})",
    )
    t.add_argument(
        "--mutual-nn",
        choices=("on", "off"),
        default="on" if _T.mutual_nn else "off",
        help="mutual-NN cleaning (default on)",
    )
    t.add_argument(
        "--mutual-nn-m",
        type=positive_float,
        default=_T.mutual_nn_m,
        help=f"mutual-NN tolerance, metres (default {_T.mutual_nn_m:g})",
    )
    t.add_argument(
        "--mutual-nn-radius-m",
        type=non_negative_float,
        default=_T.mutual_nn_radius_m,
        help="mutual-NN among pairs centred within this of each other (GNSS neighbourhood); 0 = the whole set "
        f"(default {_T.mutual_nn_radius_m:g})",
    )
    t.add_argument(
        "--rounds",
        type=non_negative_int,
        default=_T.rounds,
        help=f"EM re-assignment rounds after round 0 (default {_T.rounds})",
    )
    t.add_argument("--epochs", type=positive_int, default=_T.epochs, help=f"epochs per round (default {_T.epochs})")
    t.add_argument(
        "--candidate-radius-m",
        type=non_negative_float,
        default=_T.candidate_radius_m,
        help=f"candidate centres within this of the base centre (default {_T.candidate_radius_m:g})",
    )
    t.add_argument(
        "--candidate-step-m",
        type=positive_float,
        default=_T.candidate_step_m,
        help=f"candidate grid step (default {_T.candidate_step_m:g})",
    )
    t.add_argument(
        "--jitter-m",
        type=non_negative_float,
        default=_T.jitter_m,
        help=f"positives drawn among candidates this close to the assigned one (default {_T.jitter_m:g})",
    )
    t.add_argument(
        "--negative-exclude-m",
        type=non_negative_float,
        default=_T.negative_exclude_m,
        help=f"mask in-batch negatives centred this close (default {_T.negative_exclude_m:g})",
    )
    t.add_argument(
        "--consistency",
        type=non_negative_float,
        default=_T.consistency,
        help=f"weight of the backbone feature drift term (default {_T.consistency:g}; only without --freeze-backbone)",
    )
    t.add_argument(
        "--freeze-backbone",
        action=argparse.BooleanOptionalAction,
        default=_T.freeze_backbone,
        help="train the retrieval heads only (default on)",
    )
    t.add_argument(
        "--batch", type=positive_int, default=_T.batch, help=f"batch (in-batch negatives; default {_T.batch})"
    )
    t.add_argument("--lr", type=positive_float, default=_T.lr, help=f"Adam learning rate (default {_T.lr:g})")
    t.add_argument(
        "--temperature",
        type=positive_float,
        default=_T.temperature,
        help=f"InfoNCE temperature (default {_T.temperature:g})",
    )
    t.add_argument("--seed", type=int, default=_T.seed)
    t.add_argument(
        "--retrieval-dim",
        type=positive_int,
        default=_T.retrieval_dim,
        help=f"D of a head added to a model without one (default {_T.retrieval_dim})",
    )
    t.add_argument(
        "--retrieval-pool",
        choices=("gem", "spatial", "matching"),
        default=None,
        help="pooling of an added head (default: matching for north-aligned panoramas, else gem)",
    )
    t.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=_train_handler)
