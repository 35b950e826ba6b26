# SPDX-License-Identifier: Apache-2.0
"""`xview-adapt train-retrieval`: the retrieval head trained on a target city's unlabelled pairs (issue 20).

Each pair (the extractor's output: ground image, heading, GNSS fix) gets a base centre: its fix, or the fine
model's own heat-map mode in the fix-centred patch (``--positives heatmap``, label-free), or its true position
(``--labels gt``, the supervised reference). Candidate patches are cut with the node's patch builder on a small
grid around the base centre. Training rounds (an EM scheme): round 0 trains on the base centres; each further
round first re-assigns every ground image's positive to the candidate the current model finds most similar
(E-step), then keeps only the pairs whose ground and aerial descriptors are mutual nearest neighbours over the
data set (within ``--mutual-nn-m`` of each other's centre), then trains (M-step). Loss: symmetric InfoNCE with
in-batch negatives (negatives centred within ``--negative-exclude-m`` of the anchor are masked: consecutive
frames see the same place), plus ``--consistency`` x the mean squared drift of both backbones' head features
from the initial model's when the backbones train (``--no-freeze-backbone``), so the fine heat maps keep their
footing. Batch-norm statistics are never updated here (the fine model's calibration is kept).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from offline_adapt.data.dataset import PairDataset, PairRecord
from offline_adapt.retrieval.options import TrainRetrievalOptions
from xview_loc_ros import preprocess
from xview_loc_ros.geo import LocalENU
from xview_loc_ros.tiles import AerialPatchBuilder, TileError, TileSource

log = logging.getLogger(__name__)
MAX_MISSING = 0.2


def candidate_offsets(radius_m: float, step_m: float) -> np.ndarray:
    """(K,2) east/north offsets of the candidate grid, the centre (0, 0) first."""
    n = int(math.floor(radius_m / step_m + 1e-9))
    steps = np.arange(-n, n + 1) * step_m
    e, nn = np.meshgrid(steps, steps)
    off = np.stack([e.ravel(), nn.ravel()], 1)
    off = off[np.hypot(off[:, 0], off[:, 1]) <= radius_m + 1e-9]
    order = np.argsort(np.hypot(off[:, 0], off[:, 1]), kind="stable")
    return off[order]


def prepare_model(model_path: str | os.PathLike, opts: TrainRetrievalOptions) -> Tuple[Any, bool]:
    """(model with a retrieval head, whether the head was added here) from a checkpoint."""
    from xview_loc_ros.models import build_model, load_checkpoint

    model, _ = load_checkpoint(model_path)
    if model.has_retrieval:
        return model, False
    cfg = dict(model.config)
    arch = cfg.pop("arch")
    extra: Dict[str, Any] = {"retrieval_dim": int(opts.retrieval_dim)}
    if opts.retrieval_pool is not None:
        extra["retrieval_pool"] = opts.retrieval_pool
    new = build_model(arch, **cfg, **extra)
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any("retrieval" not in k for k in missing):
        raise ValueError(f"{model_path}: weights do not fit the model with a retrieval head ({missing}, {unexpected})")
    return new, True


@dataclass
class Pairs:
    """The training pairs: prepared ground images (N,3,H,W), base centres and candidate centres (east, north
    metres in ``frame``), candidate patches (N,K,3,S,S) uint8 RGB and their validity (N,K)."""

    records: List[PairRecord]
    frame: LocalENU
    ground: np.ndarray
    base_en: np.ndarray
    cand_en: np.ndarray
    cand_rgb: np.ndarray
    cand_ok: np.ndarray
    gt_en: Optional[np.ndarray]


def heatmap_modes(model: Any, ds: PairDataset, records: List[PairRecord], ground: np.ndarray, batch: int) -> np.ndarray:
    """(N,2) lat/lon of the fine model's heat-map argmax in each pair's own (fix-centred) patch."""
    import torch

    config = model.config
    out = np.zeros((len(records), 2))
    model.eval()
    for a in range(0, len(records), batch):
        recs = records[a : a + batch]
        aer = np.stack([preprocess.prepare_aerial(ds.load_aerial(r), config) for r in recs])
        with torch.inference_mode():
            hm = model(torch.from_numpy(ground[a : a + batch]), torch.from_numpy(aer)).heatmaps[-1][:, 0].numpy()
        for j, (r, h) in enumerate(zip(recs, hm)):
            row, col = np.unravel_index(int(np.argmax(h)), h.shape)
            lat, lon = r.georef.pixel_to_latlon(col + 0.5, row + 0.5)
            out[a + j] = (float(lat), float(lon))
    return out


def load_pairs(
    model: Any, data: str | os.PathLike, source: TileSource, opts: TrainRetrievalOptions, progress: bool = False
) -> Pairs:
    """Prepare the pairs and cut their candidate patches (the positives' centres decided by ``opts``)."""
    ds = PairDataset(data)
    config = model.config
    preprocess.check_pair_config(config, ds.meta)
    records = list(ds.split(None))
    if not records:
        raise ValueError(f"{data}: the data set has no pairs")
    if opts.labels == "gt":
        lacking = sum(not r.has_gt for r in records)
        if lacking:
            raise ValueError(f"{data}: --labels gt needs ground truth, {lacking} of {len(records)} pairs have none")
    frame = LocalENU(records[0].center_lat, records[0].center_lon)
    ground = np.stack([preprocess.prepare_ground(ds.load_ground(r), r.heading_deg, config) for r in records])
    if opts.labels == "gt":
        ll = np.array([(r.gt_lat, r.gt_lon) for r in records], dtype=float)
    elif opts.positives == "heatmap":
        ll = heatmap_modes(model, ds, records, ground, opts.batch)
    else:
        ll = np.array(
            [(r.fix_lat, r.fix_lon) if r.fix_lat is not None else (r.center_lat, r.center_lon) for r in records],
            dtype=float,
        )
    e, n, _ = frame.to_enu(ll[:, 0], ll[:, 1])
    base = np.stack([np.atleast_1d(e), np.atleast_1d(n)], 1)
    gt_en = None
    if all(r.has_gt for r in records):
        ge, gn, _ = frame.to_enu(np.array([r.gt_lat for r in records]), np.array([r.gt_lon for r in records]))
        gt_en = np.stack([np.atleast_1d(ge), np.atleast_1d(gn)], 1)
    off = candidate_offsets(opts.candidate_radius_m, opts.candidate_step_m)
    cand = base[:, None, :] + off[None, :, :]
    s = int(config["aerial_size"])
    builder = AerialPatchBuilder(source, s, float(config["mpp"]), allow_missing=True)
    rgb = np.zeros((len(records), len(off), s, s, 3), np.uint8)
    ok = np.zeros((len(records), len(off)), bool)
    lat, lon, _ = frame.to_latlon(cand[..., 0].ravel(), cand[..., 1].ravel())
    lat, lon = np.asarray(lat).reshape(cand.shape[:2]), np.asarray(lon).reshape(cand.shape[:2])
    from tqdm import tqdm

    for i in tqdm(range(len(records)), desc="candidate patches", unit="pair", disable=not progress, leave=False):
        for k in range(len(off)):
            try:
                p = builder.build(float(lat[i, k]), float(lon[i, k]))
            except TileError:
                continue
            if p.missing_fraction <= MAX_MISSING:
                rgb[i, k], ok[i, k] = p.image, True
    keep = ok[:, 0]
    if not keep.all():
        log.warning("%d of %d pairs dropped: their positive patch has no imagery", int((~keep).sum()), len(records))
    if keep.sum() < 2:
        raise ValueError(f"{data}: fewer than 2 pairs have imagery around their positions in the tile source")
    return Pairs(
        records=[r for r, k in zip(records, keep) if k],
        frame=frame,
        ground=ground[keep],
        base_en=base[keep],
        cand_en=cand[keep],
        cand_rgb=rgb[keep],
        cand_ok=ok[keep],
        gt_en=None if gt_en is None else gt_en[keep],
    )


class _Encoder:
    """Descriptors and head features of the current model, with the backbones' head features cached when frozen."""

    def __init__(self, model: Any, pairs: Pairs, frozen: bool, batch: int) -> None:
        import torch

        self.torch, self.model, self.pairs, self.frozen, self.batch = torch, model, pairs, frozen, batch
        self._g: Optional[Any] = None
        self._a: Optional[Any] = None
        if frozen:
            with torch.inference_mode():
                self._g = torch.cat(
                    [
                        model.ground_features(torch.from_numpy(pairs.ground[i : i + batch]))
                        for i in range(0, len(pairs.ground), batch)
                    ]
                )
                n, k = pairs.cand_ok.shape
                feats = []
                flat = pairs.cand_rgb.reshape(n * k, *pairs.cand_rgb.shape[2:])
                for i in range(0, n * k, batch):
                    feats.append(model.aerial_features(self.aerial_tensor(flat[i : i + batch]))[0].half())
                self._a = torch.cat(feats).view(n, k, *feats[0].shape[1:])

    def aerial_tensor(self, rgb: np.ndarray) -> Any:
        """Patches (B,S,S,3) uint8 -> the model's normalised input, as the node prepares them."""
        return self.torch.from_numpy(np.stack([preprocess.prepare_aerial(x, self.model.config) for x in rgb]))

    def ground_feat(self, idx: np.ndarray) -> Any:
        if self._g is not None:
            return self._g[self.torch.from_numpy(idx)]
        return self.model.ground_features(self.torch.from_numpy(self.pairs.ground[idx]))

    def aerial_feat(self, idx: np.ndarray, cand: np.ndarray) -> Any:
        if self._a is not None:
            return self._a[self.torch.from_numpy(idx), self.torch.from_numpy(cand)].float()
        return self.model.aerial_features(self.aerial_tensor(self.pairs.cand_rgb[idx, cand]))[0]

    def all_descriptors(self) -> Tuple[np.ndarray, np.ndarray]:
        """(ground (N,D), candidates (N,K,D)) with the current heads."""
        torch = self.torch
        n, k = self.pairs.cand_ok.shape
        with torch.inference_mode():
            g = [
                self.model.ground_retrieval(self.ground_feat(np.arange(i, min(n, i + self.batch))))
                for i in range(0, n, self.batch)
            ]
            flat_i, flat_k = np.divmod(np.arange(n * k), k)
            a = []
            for i in range(0, n * k, self.batch):
                a.append(
                    self.model.aerial_retrieval(
                        self.aerial_feat(flat_i[i : i + self.batch], flat_k[i : i + self.batch])
                    )
                )
        return torch.cat(g).numpy(), torch.cat(a).numpy().reshape(n, k, -1)


def reassign(g: np.ndarray, cand: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """E-step: each ground image's positive = its most similar valid candidate."""
    sim = np.einsum("nd,nkd->nk", g, cand)
    sim[~ok] = -np.inf
    return np.argmax(sim, axis=1)


def mutual_nn(g: np.ndarray, a: np.ndarray, centres: np.ndarray, tol_m: float, radius_m: float = 0.0) -> np.ndarray:
    """Pairs whose ground's nearest aerial descriptor and whose aerial's nearest ground descriptor both belong to
    pairs centred within ``tol_m`` metres (consecutive frames see the same place). The neighbours compete over the
    whole set, or (``radius_m`` > 0) only among pairs centred within ``radius_m`` of each other: the GNSS says
    where the vehicle roughly is, the check asks the descriptors to agree within that neighbourhood."""
    sim = g @ a.T
    if radius_m > 0:
        far = np.hypot(centres[:, None, 0] - centres[None, :, 0], centres[:, None, 1] - centres[None, :, 1]) > radius_m
        sim = np.where(far, -np.inf, sim)
    g2a = np.argmax(sim, axis=1)
    a2g = np.argmax(sim, axis=0)
    idx = np.arange(len(g))
    d1 = np.hypot(*(centres[g2a] - centres[idx]).T)
    d2 = np.hypot(*(centres[a2g] - centres[idx]).T)
    return (d1 <= tol_m) & (d2 <= tol_m)


def concat_pairs(parts: Sequence[Pairs]) -> Pairs:
    """Several data sets as one training set. Each set's positions are moved 1000 km apart (internally only), so
    pairs of different cities are never taken for neighbours by the negative masking or the mutual-NN check."""

    def shifted(x: np.ndarray, j: int) -> np.ndarray:
        return x + np.array([j * 1e6, 0.0])

    gts = [p.gt_en for p in parts]
    gt_all: Optional[List[np.ndarray]] = [shifted(g, j) for j, g in enumerate(gts) if g is not None]
    return Pairs(
        records=[r for p in parts for r in p.records],
        frame=parts[0].frame,
        ground=np.concatenate([p.ground for p in parts]),
        base_en=np.concatenate([shifted(p.base_en, j) for j, p in enumerate(parts)]),
        cand_en=np.concatenate([shifted(p.cand_en, j) for j, p in enumerate(parts)]),
        cand_rgb=np.concatenate([p.cand_rgb for p in parts]),
        cand_ok=np.concatenate([p.cand_ok for p in parts]),
        gt_en=np.concatenate(gt_all) if gt_all is not None and len(gt_all) == len(parts) else None,
    )


def train_retrieval(
    model_path: str | os.PathLike,
    data: Sequence[str | os.PathLike],
    sources: Sequence[TileSource],
    out: str | os.PathLike,
    opts: TrainRetrievalOptions,
    progress: bool = False,
) -> Dict[str, Any]:
    """Train on the pair data sets ``data`` (their candidate patches cut from ``sources``, one per data set) and
    write ``out`` (a checkpoint with the retrieval head); returns the run summary (also stored in the checkpoint
    under ``retrieval_training``)."""
    import torch
    import torch.nn.functional as F

    from xview_loc_ros.models import save_checkpoint

    if opts.threads:
        torch.set_num_threads(int(opts.threads))
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    t0 = time.monotonic()
    model, head_added = prepare_model(model_path, opts)
    model.eval()  # BN statistics stay as they are; gradients still flow
    if len(sources) != len(data):
        raise ValueError(f"{len(data)} data sets but {len(sources)} tile sources; give one per data set")
    pairs = concat_pairs([load_pairs(model, d, src, opts, progress) for d, src in zip(data, sources)])
    n, k = pairs.cand_ok.shape
    off = candidate_offsets(opts.candidate_radius_m, opts.candidate_step_m)
    near = [np.flatnonzero(np.hypot(*(off - off[j]).T) <= opts.jitter_m + 1e-9) for j in range(k)]
    frozen = opts.freeze_backbone
    heads = [p for name, p in model.named_parameters() if "retrieval" in name]
    params = heads if frozen else list(model.parameters())
    for p in model.parameters():
        p.requires_grad_(not frozen)
    for p in heads:
        p.requires_grad_(True)
    reference = None
    if not frozen and opts.consistency > 0:
        reference = copy.deepcopy(model).eval()
        for p in reference.parameters():
            p.requires_grad_(False)
    enc = _Encoder(model, pairs, frozen, opts.batch)
    optim = torch.optim.Adam(params, lr=opts.lr)
    label_free = opts.labels == "none"
    assign = np.zeros(n, dtype=np.int64)  # the base centre
    rounds: List[Dict[str, Any]] = []
    for rnd in range(opts.rounds + 1 if label_free else 1):
        keep = np.ones(n, bool)
        if label_free and (rnd > 0 or not head_added):
            g, cand = enc.all_descriptors()
            if rnd > 0:
                assign = reassign(g, cand, pairs.cand_ok)
            if opts.mutual_nn:
                keep = mutual_nn(
                    g,
                    cand[np.arange(n), assign],
                    pairs.cand_en[np.arange(n), assign],
                    opts.mutual_nn_m,
                    opts.mutual_nn_radius_m,
                )
                if keep.sum() < max(opts.batch, n // 10):
                    log.warning("round %d: mutual-NN keeps %d of %d pairs; training on all", rnd, keep.sum(), n)
                    keep[:] = True
        centres = pairs.cand_en[np.arange(n), assign]
        stats: Dict[str, Any] = {"round": rnd, "pairs": int(keep.sum()), "of": n}
        if pairs.gt_en is not None:  # diagnostics only (never used for training unless --labels gt)
            err = np.hypot(*(centres - pairs.gt_en).T)
            stats["positive_error_m"] = {"median": float(np.median(err)), "kept_median": float(np.median(err[keep]))}
        losses = []
        idx_all = np.flatnonzero(keep)
        for _ in range(opts.epochs):
            perm = rng.permutation(idx_all)
            for a in range(0, len(perm) - 1, opts.batch):
                b = perm[a : a + opts.batch]
                if len(b) < 2:
                    continue
                cand = np.array([rng.choice([j for j in near[assign[i]] if pairs.cand_ok[i, j]]) for i in b])
                gf, af = enc.ground_feat(b), enc.aerial_feat(b, cand)
                gd, ad = model.ground_retrieval(gf), model.aerial_retrieval(af)
                logits = gd @ ad.T / opts.temperature
                c = torch.from_numpy(pairs.cand_en[b, cand])
                close = torch.cdist(c, c) < opts.negative_exclude_m
                close.fill_diagonal_(False)
                logits = logits.masked_fill(close, float("-inf"))
                target = torch.arange(len(b))
                loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
                if reference is not None:
                    with torch.no_grad():
                        rg = reference.ground_features(torch.from_numpy(pairs.ground[b]))
                        ra = reference.aerial_features(enc.aerial_tensor(pairs.cand_rgb[b, cand]))[0]
                    loss = loss + opts.consistency * (F.mse_loss(gf, rg) + F.mse_loss(af, ra))
                optim.zero_grad()
                loss.backward()
                optim.step()
                losses.append(loss.item())
        stats["loss_last_epoch"] = float(np.mean(losses[-max(1, len(idx_all) // opts.batch) :])) if losses else None
        log.info("train-retrieval round %s", stats)
        rounds.append(stats)
    for p in model.parameters():
        p.requires_grad_(True)
    summary = {
        "options": opts.to_dict(),
        "model": str(model_path),
        "data": [str(d) for d in data],
        "pairs": n,
        "candidates_per_pair": k,
        "head_added": head_added,
        "rounds": rounds,
        "seconds": time.monotonic() - t0,
    }
    save_checkpoint(Path(out), model, retrieval_training=summary)
    return summary
