# SPDX-License-Identifier: Apache-2.0
"""Drive consistency (issue 17): the teacher's heat maps smoothed along each recorded drive.

The pairs of a data set are grouped per drive (``extra["drive"]``, else ``extra["bag"]``: the bag the
extractor read them from), ordered by stamp and cut where two successive pairs are more than
``max_gap_s`` apart (the drive filter's own gap: a longer step re-initialises it). Each piece is smoothed
forward and backward by :func:`xview_loc_ros.drive_filter.smooth_drive`, the node's filter: per pair the
fix (``fix_cov_en``, else ``fix_std_m``, else ``--gnss-std-m``) and the teacher's finest heat map (the
cached top-k probabilities) over the pair's patch; between pairs the motion of
:func:`xview_loc_ros.localizer.fix_motion`, the node's rule without odometry: the median speed of the
fixes (the pairs' own, interpolated at their stamps by the extractor) along the pair's heading (IMU,
else course over ground, as extracted) — unless both pairs carry the wheel odometry the extractor
integrates with ``--odom-topic`` (``extra["odom_en"]``, by the node's OdometryBuffer), which then
moves the belief (the node's "odom" source). Data sets extracted without it fall back to the fixes.

Per pair the result is the smoothed belief's mean as patch pixels of the label grid (``u``, ``v``), its
std, the belief's most probable cell (``u_map``, ``v_map``) and the distance (m) from the teacher's mode
(the cached label) to the smoothed mean (``teacher_dist_m``). Two uses, each a flag of ``xview-adapt adapt``:
``--pseudo-labels drive-smooth`` (the smoothed mean is the pseudo label) and ``--drive-consistency-m D``
(drop pairs whose teacher mode is more than D metres from the smoothed track). Where the pairs have ground
truth, the rows carry the teacher's and the smoothed label's errors (diagnostics only, never used).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from offline_adapt.data.dataset import PairRecord
from xview_loc_ros.drive_filter import FilterParams, SmootherFrame, smooth_drive
from xview_loc_ros.geo import LocalENU
from xview_loc_ros.localizer import Fix, FixBuffer, fix_motion

if TYPE_CHECKING:  # pseudo_labels loads torch
    from offline_adapt.adapt.pseudo_labels import PseudoLabels

#: bump when the smoothing rule changes: the step's cache key
SMOOTHER_VERSION = 1


def drive_of(rec: PairRecord) -> str:
    """The drive a pair came from: ``extra["drive"]``, else ``extra["bag"]`` (the extractor's)."""
    key = rec.extra.get("drive") or rec.extra.get("bag")
    if not key:
        raise ValueError(
            f"pair {rec.id!r}: no drive recorded (extra 'bag' or 'drive'); drive smoothing needs pairs extracted "
            "from recorded drives (xview-adapt extract); --pseudo-labels teacher for other pairs"
        )
    return str(key)


def split_drives(records: Sequence[PairRecord], max_gap_s: float) -> List[List[PairRecord]]:
    """The pairs per drive, ordered by stamp and cut where successive stamps are more than ``max_gap_s``
    apart; drives in order of their first pair. ValueError naming the pair without a stamp, a fix or a
    drive, or two pairs of one drive with the same stamp."""
    drives: Dict[str, List[PairRecord]] = {}
    for r in records:
        if r.stamp is None or not math.isfinite(float(r.stamp)):
            raise ValueError(
                f"pair {r.id!r}: no stamp; drive smoothing needs the pairs' stamps (--pseudo-labels teacher without)"
            )
        if r.fix_lat is None or r.fix_lon is None:
            raise ValueError(
                f"pair {r.id!r}: no GNSS fix; drive smoothing needs each pair's fix (--pseudo-labels teacher without)"
            )
        drives.setdefault(drive_of(r), []).append(r)
    out: List[List[PairRecord]] = []
    for key, recs in drives.items():
        recs = sorted(recs, key=lambda r: float(r.stamp or 0.0))
        piece = [recs[0]]
        for a, b in zip(recs[:-1], recs[1:]):
            dt = float(b.stamp or 0.0) - float(a.stamp or 0.0)
            if dt <= 0:
                raise ValueError(f"pairs {a.id!r} and {b.id!r} of drive {key!r} have the same stamp")
            if dt > max_gap_s:
                out.append(piece)
                piece = []
            piece.append(b)
        out.append(piece)
    return out


def odom_position(rec: PairRecord) -> Optional[Tuple[float, float, int]]:
    """The pair's odometry dead reckoning (east, north, segment) as the extractor records it with
    ``--odom-topic``; None when absent (data sets without it) or malformed."""
    en, seg = rec.extra.get("odom_en"), rec.extra.get("odom_segment")
    try:
        e, n = (float(x) for x in en)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    if seg is None or not (math.isfinite(e) and math.isfinite(n)):
        return None
    return e, n, int(seg)


def pair_motion(prev: PairRecord, rec: PairRecord, fixes: FixBuffer) -> Tuple[Tuple[float, float], str]:
    """(east, north) metres driven from ``prev`` to ``rec`` and the source: the recorded odometry when both
    pairs carry it in one segment ("odom"), else :func:`xview_loc_ros.localizer.fix_motion` (fix speed along
    the heading in the middle of the step, else the fixes' velocity, else none)."""
    a, b = odom_position(prev), odom_position(rec)
    if a is not None and b is not None and a[2] == b[2]:
        return (b[0] - a[0], b[1] - a[1]), "odom"
    t0, t1 = float(prev.stamp or 0.0), float(rec.stamp or 0.0)
    return fix_motion(fixes, t0, t1, mid_heading(prev.heading_deg, rec.heading_deg))


def mid_heading(h0: Optional[float], h1: Optional[float]) -> Optional[float]:
    """Compass heading (deg) in the middle of a step from the headings at its ends (either may be None)."""
    if h0 is None or h1 is None:
        return h1 if h0 is None else h0
    a, b = math.radians(h0), math.radians(h1)
    return math.degrees(math.atan2(math.sin(a) + math.sin(b), math.cos(a) + math.cos(b))) % 360.0


@dataclass(frozen=True)
class SmoothOptions:
    """The smoother's settings: the drive filter's parameters and the fallback fix std (m)."""

    params: FilterParams = FilterParams()
    gnss_std_m: float = 5.0

    def fingerprint(self) -> Dict[str, Any]:
        return {"version": SMOOTHER_VERSION, "gnss_std_m": self.gnss_std_m, "filter": asdict(self.params)}


def smooth_pairs(records: Sequence[PairRecord], labels: "PseudoLabels", opts: SmoothOptions) -> List[Dict[str, Any]]:
    """One row per pair of ``labels`` (in the labels' order): id, segment (index of the drive piece),
    u, v (smoothed mean, label pixels), u_map, v_map (smoothed MAP cell), std_m (largest std of the
    smoothed belief), teacher_dist_m; with GT also teacher_err_m, smoothed_err_m, smoothed_map_err_m."""
    by_id = {r.id: r for r in records}
    missing = [i for i in labels.ids if i not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} pseudo-labelled pairs are not in the data set (e.g. {missing[0]!r})")
    row_of = labels.row_of()
    s = int(labels.size_px)
    rows: Dict[str, Dict[str, Any]] = {}
    for seg, piece in enumerate(split_drives([by_id[i] for i in labels.ids], opts.params.max_gap_s)):
        first = piece[0]
        datum = LocalENU(float(first.fix_lat or 0.0), float(first.fix_lon or 0.0), 0.0)
        covs = [r.fix_cov_en_or(opts.gnss_std_m) for r in piece]
        fixes = FixBuffer(max_age_s=math.inf, max_gap_s=math.inf, maxlen=len(piece) + 1)
        for r, c in zip(piece, covs):
            fixes.add(Fix(float(r.stamp or 0.0), float(r.fix_lat or 0.0), float(r.fix_lon or 0.0), math.nan, c))
        frames, centres, sources = [], [], []
        for k, (r, c) in enumerate(zip(piece, covs)):
            fe, fn, _ = datum.to_enu(float(r.fix_lat or 0.0), float(r.fix_lon or 0.0), 0.0)
            pe, pn, _ = datum.to_enu(r.center_lat, r.center_lon, 0.0)
            centres.append((float(pe), float(pn)))
            motion, source = (0.0, 0.0), "none"
            if k:
                motion, source = pair_motion(piece[k - 1], r, fixes)
            sources.append(source)
            frames.append(
                SmootherFrame(
                    float(r.stamp or 0.0),
                    motion,
                    source,
                    (float(fe), float(fn)),
                    c,
                    labels.heatmaps([row_of[r.id]])[0],
                    r.georef,
                    centres[-1],
                )
            )
        beliefs = smooth_drive(frames, opts.params, datum)
        for r, b, (ce, cn), source in zip(piece, beliefs, centres, sources):
            if b is None:
                raise ValueError(f"pair {r.id!r}: the drive filter has no belief there (no usable fix)")
            px = float(r.size_px) * float(r.mpp) / s  # metres per label pixel
            e, n, cov = b.moments()
            me, mn = b.map_cell()
            u, v = (e - ce) / px + s / 2.0, -(n - cn) / px + s / 2.0
            tu, tv = (float(x) for x in labels.uv[row_of[r.id]])
            row: Dict[str, Any] = {
                "id": r.id,
                "segment": seg,
                "u": u,
                "v": v,
                "u_map": (me - ce) / px + s / 2.0,
                "v_map": -(mn - cn) / px + s / 2.0,
                "std_m": float(math.sqrt(max(np.linalg.eigvalsh(cov)))),
                "teacher_dist_m": math.hypot(u - tu, v - tv) * px,
                "motion": source,  # how the smoother moved to this pair from the previous one
            }
            if r.has_gt:
                gu, gv = r.gt_pixel()  # record pixels
                k_ = float(r.size_px) / s  # record pixels per label pixel
                gu, gv = gu / k_, gv / k_
                row["teacher_err_m"] = math.hypot(tu - gu, tv - gv) * px
                row["smoothed_err_m"] = math.hypot(u - gu, v - gv) * px
                row["smoothed_map_err_m"] = math.hypot(row["u_map"] - gu, row["v_map"] - gv) * px
            rows[r.id] = row
    return [rows[i] for i in labels.ids]


def consistent_ids(rows: Sequence[Dict[str, Any]], max_dist_m: float) -> List[str]:
    """Ids whose teacher mode lies within ``max_dist_m`` of the smoothed track (all when it is 0)."""
    if max_dist_m <= 0:
        return [r["id"] for r in rows]
    return [r["id"] for r in rows if r["teacher_dist_m"] <= max_dist_m]
