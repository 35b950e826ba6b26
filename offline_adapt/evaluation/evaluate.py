# SPDX-License-Identifier: Apache-2.0
"""Evaluation: predictions and metrics in metres over a pair data set, plus ``xview-adapt evaluate``.

Positions are decoded with :func:`xview_loc_ros.heatmap.decode_heatmap` (sub-pixel refined; the
integer argmax, CCVPE's protocol, is reported as ``*_argmax``). Pixel -> metre conversions go
through the record's PatchGeoref (ENU metres from the patch centre). ``prior_*`` is the error of
the patch centre, i.e. of the coarse fix alone. Pinhole longitudinal/lateral errors split the
error along/across the camera heading (CCVPE's KITTI protocol); orientation errors compare the
model's heading at the predicted pixel with the true heading of the image as fed to the model.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from offline_adapt.evaluation import plots
from xview_loc_ros.fsutil import atomic_path, atomic_write_json
from xview_loc_ros.heatmap import decode_heatmap, heading_from_orientation
from xview_loc_ros.inference import OUTPUT_FINEST, OUTPUT_ORIENTATION, open_backend

log = logging.getLogger(__name__)

RunFn = Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, Optional[np.ndarray]]]
THRESHOLDS_M = (1.0, 3.0, 5.0)
THRESHOLDS_DEG = (1.0, 3.0, 5.0)


def torch_runner(model: Any, device: Any = None) -> RunFn:
    """(ground, aerial) normalised float32 NCHW -> (finest logits (B,1,S,S), orientation or None)."""
    import torch

    dev = device or next(model.parameters()).device

    def run(g: np.ndarray, a: np.ndarray):
        with torch.no_grad():
            out = model(torch.from_numpy(g).to(dev), torch.from_numpy(a).to(dev))
        ori = None if out.orientation is None else out.orientation.float().cpu().numpy()
        return out.heatmaps[-1].float().cpu().numpy(), ori

    return run


def backend_runner(backend: Any) -> RunFn:
    """The same through an inference Backend (torch, onnxruntime, tensorrt)."""
    names = [OUTPUT_FINEST] + ([OUTPUT_ORIENTATION] if OUTPUT_ORIENTATION in backend.outputs else [])

    def run(g: np.ndarray, a: np.ndarray):
        out = backend.infer_outputs(g, a, names)
        return out[OUTPUT_FINEST], out.get(OUTPUT_ORIENTATION)

    return run


def _angle_diff(a: float, b: float) -> float:
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def predict(
    run: RunFn, tds: Any, batch_size: int = 8, keep_logits: int = 0
) -> Tuple[List[Dict[str, Any]], List[np.ndarray]]:
    """Run over a PairTorchDataset; one dict per pair (errors in metres, headings in degrees) and
    the finest logits (S, S) of the first ``keep_logits`` pairs (for plots)."""
    s = int(tds.config["aerial_size"])
    pinhole = tds.config["ground_type"] == "pinhole"
    preds: List[Dict[str, Any]] = []
    kept: List[np.ndarray] = []
    for start in range(0, len(tds), batch_size):
        items = [tds[i] for i in range(start, min(start + batch_size, len(tds)))]
        g = np.stack([it["ground"].numpy() for it in items])
        a = np.stack([it["aerial"].numpy() for it in items])
        logits, ori = run(g, a)
        for b, it in enumerate(items):
            rec = tds.records[it["index"]]
            est = decode_heatmap(logits[b, 0], s)
            if len(kept) < keep_logits:
                kept.append(logits[b, 0])
            geo = rec.georef
            lat, lon = geo.pixel_to_latlon(est.u, est.v)
            p: Dict[str, Any] = {
                "id": rec.id,
                "u": est.u,
                "v": est.v,
                "u_argmax": est.u_int,
                "v_argmax": est.v_int,
                "lat": float(lat),
                "lon": float(lon),
                "confidence": est.confidence,
                "ambiguity": est.ambiguity,
                "std_px": est.std_px,
            }
            fed_heading = float(it["heading_deg"])
            if ori is not None and not tds.known:
                p["heading_pred_deg"] = heading_from_orientation(ori[b], est.u, est.v)
                if math.isfinite(fed_heading):
                    p["ori_err_deg"] = _angle_diff(p["heading_pred_deg"], fed_heading)
            if rec.has_gt:
                gu, gv = rec.gt_pixel()
                ge, gn = geo.pixel_to_enu(gu, gv)
                pe, pn = geo.pixel_to_enu(est.u, est.v)
                ae, an = geo.pixel_to_enu(est.u_int, est.v_int)
                de, dn = float(pe - ge), float(pn - gn)
                p.update(
                    gt_u=gu,
                    gt_v=gv,
                    err_m=math.hypot(de, dn),
                    err_argmax_m=float(math.hypot(ae - ge, an - gn)),
                    prior_m=float(math.hypot(ge, gn)),
                )
                if pinhole and rec.heading_deg is not None:
                    h = math.radians(rec.heading_deg)
                    fe, fn = math.sin(h), math.cos(h)  # camera forward (east, north)
                    p["longitudinal_m"] = abs(de * fe + dn * fn)
                    p["lateral_m"] = abs(de * fn - dn * fe)
            preds.append(p)
    return preds, kept


def _stats(values: Sequence[Optional[float]], name: str, unit: str, thresholds: Sequence[float]) -> Dict[str, float]:
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size == 0:
        return {}
    out = {f"mean_{name}": float(x.mean()), f"median_{name}": float(np.median(x))}
    for t in thresholds:
        out[f"{name}_within_{t:g}{unit}"] = float((x <= t).mean())
    return out


def summarize(preds: List[Dict[str, Any]]) -> Dict[str, Any]:
    """metrics.json content: count, mean_m, median_m, prior_mean_m, ... (see module docstring)."""
    gt = [p for p in preds if "err_m" in p]
    m: Dict[str, Any] = {"count": len(gt), "count_total": len(preds)}
    if gt:
        err = [p["err_m"] for p in gt]
        m.update(mean_m=float(np.mean(err)), median_m=float(np.median(err)))
        m.update({k: v for k, v in _stats(err, "m", "m", THRESHOLDS_M).items() if "within" in k})
        m.update(
            mean_m_argmax=float(np.mean([p["err_argmax_m"] for p in gt])),
            median_m_argmax=float(np.median([p["err_argmax_m"] for p in gt])),
            prior_mean_m=float(np.mean([p["prior_m"] for p in gt])),
            prior_median_m=float(np.median([p["prior_m"] for p in gt])),
        )
        for key in ("longitudinal", "lateral"):
            m.update(_stats([p.get(f"{key}_m") for p in gt], f"{key}_m", "m", THRESHOLDS_M))
    m.update(_stats([p.get("ori_err_deg") for p in preds], "ori_err_deg", "deg", THRESHOLDS_DEG))
    return m


def validator(tds: Any, batch_size: int = 16) -> Callable[[Any], Dict[str, float]]:
    """validate_fn for training.fit: mean/median metres on ``tds`` (a PairTorchDataset, or a list of
    them scored as one set; model already in eval mode)."""
    sets = list(tds) if isinstance(tds, (list, tuple)) else [tds]

    def validate(model: Any) -> Dict[str, float]:
        run = torch_runner(model)
        preds = [p for s in sets for p in predict(run, s, batch_size)[0]]
        m = summarize(preds)
        return {k: m[k] for k in ("mean_m", "median_m", "prior_mean_m", "mean_ori_err_deg") if k in m}

    return validate


def evaluate(
    model_path: str,
    data_dir: str,
    out_dir: str,
    split: Optional[str] = "test",
    backend: str = "torch",
    batch_size: int = 8,
    device: Optional[str] = None,
    grid: int = 12,
    threads: Optional[int] = None,
) -> Dict[str, Any]:
    """Evaluate a model file on a data set split; writes metrics.json, predictions.jsonl, cdf.png, grid.png."""
    from offline_adapt.data.torch_data import open_split

    be = open_backend(model_path, backend=backend, device=device, threads=threads, max_batch=batch_size)
    log.info("evaluating %s", be.describe())
    tds = open_split(data_dir, split, be.config, require_gt=False)
    preds, kept = predict(backend_runner(be), tds, batch_size, keep_logits=grid)
    metrics = summarize(preds)
    metrics.update(model=str(model_path), data=str(data_dir), split=split, backend=be.name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", metrics)
    with atomic_path(out / "predictions.jsonl") as tmp:
        import json

        tmp.write_text("".join(json.dumps(p) + "\n" for p in preds))
    if metrics["count"]:
        plots.error_cdf(
            {
                "model": [p["err_m"] for p in preds if "err_m" in p],
                "patch centre (prior)": [p["prior_m"] for p in preds if "prior_m" in p],
            },
            out / "cdf.png",
        )
    plots.pair_grid(tds, preds[: len(kept)], kept, out / "grid.png")
    return metrics
