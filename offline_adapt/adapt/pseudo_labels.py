# SPDX-License-Identifier: Apache-2.0
"""The cached teacher pass over target pairs (step 1 of the adaptation, paper §3.2).

One teacher forward pass per pair, never repeated per epoch. Per pair the cache stores the mode of
the finest heat map in continuous patch pixels (``uv``: sub-pixel refined by
:func:`xview_loc_ros.heatmap.decode_heatmap`; ``uv_argmax``: the argmax cell centre, the paper's
y = argmax H_K) and, for the heat-map based ("-M") ablation, the finest heat map itself stored
compactly: its ``topk`` most probable pixels (flat indices int32 + softmax probabilities float16).

Files in the cache folder: ``pseudo_labels.npz``, ``teacher_predictions.jsonl`` and
``manifest.json``, the step's :class:`xview_loc_ros.fsutil.StepCache` record (written last; its
inputs are the teacher's sha256, the data set's fingerprint, the split and top-k; it also lists the
outputs' sha256 and the pair ids). A cache whose manifest is missing, stale (another teacher / data
set / split / top-k) or whose files do not match their checksums is rebuilt by
:func:`ensure_pseudo_labels`.

GNSS prior (``gnss_std_m`` given, ``--gnss-prior``): the vehicle knows where its fix put it. The
labels are then those of the teacher's heat map multiplied by the fix's likelihood, a Gaussian
centred on the fix (the patch centre of extracted pairs) with the fix's east/north covariance in
patch pixels (:func:`fix_prior_px`; pairs without one: their ``fix_std_m``, else ``gnss_std_m``):
``uv``, ``uv_argmax``, ``confidence`` and the top-k describe that posterior, so a decoy peak far
from the fix loses to a peak near it. ``teacher_predictions.jsonl`` keeps the teacher's own
predictions. The product is taken over the full heat map during the teacher pass, not over the
cached top-k (a peak near the fix may lie outside the teacher's top-k).

Pseudo ground truth from the cached labels (paper §3.2, eq. 3):

X, the finest-resolution pseudo GT (B, S, S), is either mode-based (a Gaussian of ``sigma_px``
finest pixels centred on the teacher's mode, value 1 at the centre) or heat-map based (the "-M"
ablation: the teacher's probabilities scaled so that their peak is 1, so that InfoNCE's positive
threshold means the same for both). P_k = downsample_k(X) by summing the fine pixels each cell
covers (mass preserving); levels with orientation bins get X lifted with the known heading.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from offline_adapt.adapt.options import DEFAULT_TOPK, PSEUDO_GT_MODES
from offline_adapt.data.dataset import PairRecord, dataset_fingerprint
from offline_adapt.data.torch_data import open_split
from offline_adapt.evaluation.evaluate import predict, torch_runner
from offline_adapt.train.options import SIGMA_PX
from offline_adapt.train.targets import gaussian_map, level_targets
from offline_adapt.train.training import default_device
from xview_loc_ros.fsutil import StepCache, atomic_path, file_sha256
from xview_loc_ros.heatmap import HeatmapEstimate, decode_heatmap
from xview_loc_ros.models import load_checkpoint

log = logging.getLogger(__name__)

FORMAT = "xview_loc_ros.pseudo_labels/1"
NPZ_NAME, MANIFEST_NAME = "pseudo_labels.npz", "manifest.json"
PREDICTIONS_NAME = "teacher_predictions.jsonl"


class CacheError(ValueError):
    """A pseudo-label cache is missing, corrupt, or was built from other inputs."""


@dataclass
class PseudoLabels:
    """Teacher pseudo labels of N pairs; rows follow ``ids``. Pixels are continuous patch pixels
    (u east, v south) of an ``size_px`` patch; ``mpp`` (N,) metres per pixel of each pair."""

    ids: List[str]
    uv: np.ndarray  # (N, 2) float32 refined mode
    uv_argmax: np.ndarray  # (N, 2) float32 argmax cell centre
    confidence: np.ndarray  # (N,) float32 decode_heatmap confidence
    topk_index: np.ndarray  # (N, k) int32 flat pixel index (row * S + col)
    topk_prob: np.ndarray  # (N, k) float16 softmax probability
    mpp: np.ndarray  # (N,) float32
    size_px: int
    # GNSS prior (None without): the fallback 1-sigma (m), each pair's fix as patch pixel (N, 2) and
    # its covariance in patch pixels^2 (N, 2, 2); the fields above then describe the posterior
    gnss_std_m: Optional[float] = None
    prior_uv: Optional[np.ndarray] = None
    prior_cov_px: Optional[np.ndarray] = None

    def row_of(self) -> Dict[str, int]:
        return {i: k for k, i in enumerate(self.ids)}

    def heatmaps(self, rows: Sequence[int]) -> np.ndarray:
        """(len(rows), S, S) float32 teacher probabilities rebuilt from the top-k (zero elsewhere)."""
        s = self.size_px
        out = np.zeros((len(rows), s * s), np.float32)
        for b, r in enumerate(rows):
            out[b, self.topk_index[r]] = self.topk_prob[r].astype(np.float32)
        return out.reshape(len(rows), s, s)

    def save(self, path: Path) -> None:
        arrays: Dict[str, np.ndarray] = dict(
            ids=np.asarray(self.ids, dtype=str),
            uv=self.uv,
            uv_argmax=self.uv_argmax,
            confidence=self.confidence,
            topk_index=self.topk_index,
            topk_prob=self.topk_prob,
            mpp=self.mpp,
            size_px=np.asarray(self.size_px, np.int64),
        )
        if self.gnss_std_m is not None and self.prior_uv is not None and self.prior_cov_px is not None:
            arrays.update(
                gnss_std_m=np.asarray(self.gnss_std_m, np.float64),
                prior_uv=self.prior_uv,
                prior_cov_px=self.prior_cov_px,
            )
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> "PseudoLabels":
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(
                    ids=[str(x) for x in z["ids"]],
                    uv=z["uv"],
                    uv_argmax=z["uv_argmax"],
                    confidence=z["confidence"],
                    topk_index=z["topk_index"],
                    topk_prob=z["topk_prob"],
                    mpp=z["mpp"],
                    size_px=int(z["size_px"]),
                    gnss_std_m=float(z["gnss_std_m"]) if "gnss_std_m" in z else None,
                    prior_uv=z["prior_uv"] if "gnss_std_m" in z else None,
                    prior_cov_px=z["prior_cov_px"] if "gnss_std_m" in z else None,
                )
        except (OSError, ValueError, KeyError) as e:
            raise CacheError(f"{path}: unreadable pseudo-label file ({type(e).__name__}: {e})") from e


def _sparse_topk(logits: np.ndarray, k: int):
    """(B, S, S) logits -> top-k flat indices (int32) and softmax probabilities (float16)."""
    flat = logits.reshape(logits.shape[0], -1).astype(np.float64)
    k = min(k, flat.shape[1])
    idx = np.argpartition(-flat, k - 1, axis=1)[:, :k]
    p = np.exp(flat - flat.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return idx.astype(np.int32), np.take_along_axis(p, idx, axis=1).astype(np.float16)


def fix_prior_px(rec: PairRecord, default_std_m: float) -> Tuple[np.ndarray, np.ndarray]:
    """The GNSS fix of a pair as a Gaussian in its patch: (mean (u, v) pixels, 2x2 covariance in
    pixels^2). East/north metres become u/v pixels by 1/mpp, with v growing south: the east/north
    covariance's off-diagonal changes sign."""
    cov_en = rec.fix_cov_en_or(default_std_m)
    flip = np.diag([1.0, -1.0]) / float(rec.mpp)
    return np.asarray(rec.fix_pixel(), float), flip @ cov_en @ flip.T


def gnss_log_likelihood(size: int, mean_uv: np.ndarray, cov_px: np.ndarray) -> np.ndarray:
    """(size, size) log of the fix's Gaussian likelihood at each cell centre of a size x size map,
    up to a constant (0 at the fix): -d^T cov^-1 d / 2, d the offset in pixels from ``mean_uv``."""
    c = np.arange(size, dtype=np.float64) + 0.5
    du = c[None, :] - float(mean_uv[0])
    dv = c[:, None] - float(mean_uv[1])
    inv = np.linalg.inv(np.asarray(cov_px, dtype=np.float64))
    return -0.5 * (inv[0, 0] * du * du + 2.0 * inv[0, 1] * du * dv + inv[1, 1] * dv * dv)


def teacher_pass(
    model: Any, tds: Any, batch_size: int = 8, topk: int = DEFAULT_TOPK, gnss_std_m: Optional[float] = None
):
    """Run the teacher once over a PairTorchDataset -> (PseudoLabels, per-pair prediction dicts of
    :func:`offline_adapt.evaluation.evaluate.predict`, with errors in metres where the pairs have GT).
    ``gnss_std_m`` given: the labels are of the heat map x the GNSS prior (module docstring; the
    fallback 1-sigma in metres), the predictions stay the teacher's own."""
    base = torch_runner(model)
    s = int(tds.config["aerial_size"])
    sparse: List[tuple] = []
    decoded: List[HeatmapEstimate] = []
    prior = (
        None
        if gnss_std_m is None
        else [fix_prior_px(r, gnss_std_m) for r in tds.records]  # the pass walks tds.records in order
    )

    def run(g: np.ndarray, a: np.ndarray):
        logits, ori = base(g, a)
        label = logits[:, 0].astype(np.float64)
        if prior is not None:
            first = len(decoded)
            # log posterior = log heat map + log likelihood (softmax normalises the product)
            label = label + np.stack([gnss_log_likelihood(s, *prior[first + b]) for b in range(len(label))])
        sparse.append(_sparse_topk(label, topk))
        decoded.extend(decode_heatmap(x, s) for x in label)
        return logits, ori

    model.eval()
    preds, _ = predict(run, tds, batch_size)
    labels = PseudoLabels(
        ids=[p["id"] for p in preds],
        uv=np.asarray([[e.u, e.v] for e in decoded], np.float32).reshape(-1, 2),
        uv_argmax=np.asarray([[e.u_int, e.v_int] for e in decoded], np.float32).reshape(-1, 2),
        confidence=np.asarray([e.confidence for e in decoded], np.float32),
        topk_index=np.concatenate([x[0] for x in sparse]) if sparse else np.zeros((0, topk), np.int32),
        topk_prob=np.concatenate([x[1] for x in sparse]) if sparse else np.zeros((0, topk), np.float16),
        mpp=np.asarray([r.mpp for r in tds.records], np.float32),
        size_px=s,
        gnss_std_m=gnss_std_m,
        prior_uv=None if prior is None else np.asarray([m for m, _ in prior], np.float32).reshape(-1, 2),
        prior_cov_px=None if prior is None else np.asarray([c for _, c in prior], np.float32).reshape(-1, 2, 2),
    )
    return labels, preds


def _expected(
    teacher: str, data_dir: str, split: Optional[str], topk: int, gnss_std_m: Optional[float]
) -> Dict[str, Any]:
    inputs: Dict[str, Any] = {
        "format": FORMAT,
        "teacher_sha256": file_sha256(teacher),
        "data_fingerprint": dataset_fingerprint(data_dir),
        "split": split,
        "topk": int(topk),
    }
    if gnss_std_m is not None:  # only then: caches made before the prior existed stay valid
        inputs["gnss_prior_std_m"] = float(gnss_std_m)
    return inputs


def _cache(cache_dir: str | os.PathLike, inputs: Optional[Dict[str, Any]]) -> StepCache:
    return StepCache(cache_dir, inputs, record=MANIFEST_NAME)


def load_pseudo_labels(
    cache_dir: str | os.PathLike,
    teacher: Optional[str] = None,
    data_dir: Optional[str] = None,
    split: Optional[str] = "train",
    topk: int = DEFAULT_TOPK,
    gnss_std_m: Optional[float] = None,
) -> PseudoLabels:
    """Load a cache and verify it (checksums always; inputs when ``teacher``/``data_dir`` are given).
    Raises CacheError naming what does not match."""
    known = teacher is not None and data_dir is not None
    cache = _cache(
        cache_dir,
        _expected(teacher, data_dir, split, topk, gnss_std_m) if teacher is not None and data_dir is not None else None,
    )
    why = cache.why_not_done(check_inputs=known)
    if why is not None:
        raise CacheError(f"pseudo labels: {why}")
    npz = cache.folder / NPZ_NAME
    labels = PseudoLabels.load(npz)
    if labels.ids != (cache.record() or {}).get("ids"):
        raise CacheError(f"{npz}: pair ids differ from {MANIFEST_NAME}")
    return labels


def build_pseudo_labels(
    teacher: str,
    data_dir: str,
    cache_dir: str | os.PathLike,
    split: Optional[str] = "train",
    batch_size: int = 8,
    topk: int = DEFAULT_TOPK,
    device: Optional[str] = None,
    gnss_std_m: Optional[float] = None,
) -> PseudoLabels:
    """Teacher pass over ``split`` of ``data_dir``; writes the npz, the teacher's per-pair
    predictions (JSONL) and, last, the manifest (the step's record). ``gnss_std_m``: see
    :func:`teacher_pass`."""

    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    cache = _cache(cache_dir, _expected(teacher, data_dir, split, topk, gnss_std_m))
    cache.start(outputs=[NPZ_NAME, PREDICTIONS_NAME])
    model, _ = load_checkpoint(teacher, map_location="cpu")
    model.to(torch.device(device) if device else default_device())
    tds = open_split(data_dir, split, model.config, require_gt=False)
    labels, preds = teacher_pass(model, tds, batch_size, topk, gnss_std_m)
    labels.save(cache.folder / NPZ_NAME)
    with atomic_path(cache.folder / PREDICTIONS_NAME) as tmp:
        tmp.write_text("".join(json.dumps(p) + "\n" for p in preds))
    cache.finish(
        [NPZ_NAME, PREDICTIONS_NAME],
        teacher=str(teacher),
        data=str(data_dir),
        size_px=labels.size_px,
        count=len(labels.ids),
        ids=labels.ids,
    )
    log.info("pseudo labels: %d pairs of %s (split %s) from teacher %s", len(labels.ids), data_dir, split, teacher)
    return labels


def ensure_pseudo_labels(
    teacher: str,
    data_dir: str,
    cache_dir: str | os.PathLike,
    split: Optional[str] = "train",
    batch_size: int = 8,
    topk: int = DEFAULT_TOPK,
    device: Optional[str] = None,
    gnss_std_m: Optional[float] = None,
) -> PseudoLabels:
    """The verified cache when it fits these inputs, otherwise a rebuilt one (the reason is logged)."""
    try:
        labels = load_pseudo_labels(cache_dir, teacher, data_dir, split, topk, gnss_std_m)
        log.info("pseudo labels: using cache %s (%d pairs)", cache_dir, len(labels.ids))
        return labels
    except CacheError as e:
        if (Path(cache_dir) / MANIFEST_NAME).exists() or (Path(cache_dir) / NPZ_NAME).exists():
            log.warning("rebuilding pseudo labels: %s", e)
    return build_pseudo_labels(teacher, data_dir, cache_dir, split, batch_size, topk, device, gnss_std_m)


def read_predictions(path: str | os.PathLike) -> List[Dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def pseudo_fine(
    labels: PseudoLabels, rows: Sequence[int], mode: str = "mode", sigma_px: float = SIGMA_PX
) -> torch.Tensor:
    """X for the label ``rows``: (B, S, S) float32, peak 1."""
    if mode == "mode":
        return gaussian_map(labels.size_px, torch.from_numpy(labels.uv[np.asarray(rows, dtype=np.int64)]), sigma_px)
    if mode == "heatmap":
        h = torch.from_numpy(labels.heatmaps(rows))
        return h / h.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    raise ValueError(f"pseudo-GT mode must be one of {PSEUDO_GT_MODES}, got {mode!r}")


def pseudo_levels(
    fine: torch.Tensor, levels: Sequence[Sequence[int]], heading_deg: Optional[torch.Tensor] = None
) -> List[torch.Tensor]:
    """P_1..P_K (coarse -> fine), each (B, n_ori, h, w), from X (B, S, S); ``heading_deg`` (B,) the
    compass heading of the ground image as fed to the model (None or NaN = unknown: spread evenly)."""
    if heading_deg is not None and not bool(torch.isfinite(heading_deg).all()):
        heading_deg = None
    return level_targets(fine, levels, heading_deg, mode="sum")
