# SPDX-License-Identifier: Apache-2.0
"""Wide-area re-localization in the node (issue 20): when to search the city index, where, and what to keep.

The node's per-frame path cuts a 64 m aerial patch around the fix (or the drive filter's belief); when the
vehicle is not inside that patch (a GNSS jump, a fix with a large covariance, a filter that followed a wrong fix,
a cold start without any fix) the heat map cannot see it. Re-localization then:

1. **Triggers** (:class:`RelocTrigger`, one decision per camera frame, in this order):
   ``cold_start`` no position at all (no fix at the frame's stamp and no earlier good position) -> the whole
   index; ``lost`` the drive filter reports a lost track (belief and fix disagree, or it just re-initialised
   from the fix because they did); ``fix_covariance`` the fix's largest standard deviation is above
   ``fix_std_m``; ``low_confidence`` the heat map's confidence stayed below ``min_confidence`` for
   ``low_frames`` consecutive frames (a frame without any heat map counts as one). Searches are rate limited:
   at most one per ``interval_s`` seconds of image time (a frame stamp), whatever the reasons.
2. **Candidates** (:func:`search_centre`, :meth:`xview_loc_ros.retrieval.CityIndex.search`): the frame's ground
   descriptor (the model's retrieval head) against the index entries within ``radius_m`` of the last good
   position (dead-reckoned to the frame by the caller), else of the fix, else (cold start) all entries; the
   ``top_k`` most similar patch centres.
3. **Scoring** (the localizer runs the fine model on the candidates' patches as one batch) and **decision**
   (:func:`choose`): a patch qualifies when its heat map's confidence reaches ``accept_confidence`` and its
   ambiguity is within the gate's ``max_ambiguity``; the search centre's own patch is kept when it qualifies
   (look-alike patches elsewhere can be as confident as the true one), else the most confident qualifying
   candidate; none qualifying: the search is ``rejected`` and nothing changes. The GNSS gate is not applied
   to candidates: disagreeing with the fix is what re-localization is for.
4. **Outcome**: with ``fusion: filter`` the drive filter is re-initialised at the chosen position with the
   heat map's covariance (reason ``reloc``; ``relocalized``), unless that position agrees with the belief
   within ``filter_lost_chi2`` (``confirmed``: the belief is kept; when the frame had no heat map of its
   own, no fix or no tiles, the kept patch's heat map updates the filter instead); with ``fusion: frame``
   the chosen estimate is published as the frame's pose. With the filter, a kept position that the fix
   disagrees with (beyond ``filter_lost_chi2``) also holds such fixes out of the filter for ``gnss_hold_s``
   seconds (renewed by every search that keeps a position against the fix; ended by the first fix that
   agrees with the belief): a fix tens of metres off with a 15 m std is otherwise weighed and drags the
   belief off the vehicle.

ROS-free; the index, the backend and the patches come from the caller (:class:`xview_loc_ros.localizer.Localizer`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from xview_loc_ros.fsutil import file_sha256
from xview_loc_ros.inference.base import OUTPUT_GROUND_DESCRIPTOR, has_retrieval
from xview_loc_ros.retrieval import Candidate, CityIndex, IndexFileError, load_index

#: the backends' output name of the ground image's retrieval descriptor (B, D), unit rows
GROUND_DESCRIPTOR = OUTPUT_GROUND_DESCRIPTOR
#: why a search ran, in the order :class:`RelocTrigger` checks them
REASONS = ("cold_start", "lost", "fix_covariance", "low_confidence")
#: what a search ended with
OUTCOMES = ("relocalized", "confirmed", "rejected", "no_candidates", "failed")


class RelocUnavailable(ValueError):
    """Re-localization was asked for (``reloc_index``) but cannot run: no retrieval head, or an unusable index."""


@dataclass(frozen=True)
class RelocParams:
    """See the module docstring and README "Re-localization" (metres, seconds, frames)."""

    radius_m: float = 150.0
    top_k: int = 8
    fix_std_m: float = 25.0
    min_confidence: float = 0.1
    low_frames: int = 5
    on_lost: bool = True
    interval_s: float = 2.0
    accept_confidence: float = 0.2
    max_ambiguity: float = 0.8
    last_good_max_age_s: float = 60.0
    gnss_hold_s: float = 10.0
    centre_first: bool = True
    rank: str = "confidence"


class RelocTrigger:
    """Per-frame trigger with rate limiting. Not thread-safe (the node's worker drives it)."""

    def __init__(self, params: RelocParams) -> None:
        self.p = params
        self.low = 0  # consecutive frames with a heat-map confidence below min_confidence (or none)
        self.last_search: Optional[float] = None  # stamp of the last search
        self.counts: Counter = Counter()

    def observe(
        self,
        stamp: float,
        *,
        have_position: bool,
        lost: bool,
        fix_std_m: Optional[float],
        confidence: Optional[float],
    ) -> str:
        """The reason to search at this frame ("" = none). ``have_position``: a fix at the frame or an earlier
        good position exists; ``lost``: the filter reports a lost track; ``fix_std_m``: the fix's largest std
        (None = no fix); ``confidence``: the frame's heat-map confidence (None = the frame gave no heat map)."""
        p = self.p
        if confidence is not None and confidence >= p.min_confidence:
            self.low = 0
        else:
            self.low += 1
        if not have_position:
            reason = "cold_start"
        elif lost and p.on_lost:
            reason = "lost"
        elif fix_std_m is not None and fix_std_m > p.fix_std_m:
            reason = "fix_covariance"
        elif self.low >= p.low_frames:
            reason = "low_confidence"
        else:
            return ""
        last = self.last_search
        if last is not None and stamp < last:  # time went backwards (a bag restarted): forget the schedule
            self.last_search = last = None
        if last is not None and stamp - last < p.interval_s:
            self.counts["rate_limited"] += 1
            return ""
        return reason

    def searched(self, stamp: float) -> None:
        """A search ran at ``stamp``: the interval starts, the low-confidence count restarts."""
        self.last_search = stamp
        self.low = 0


def fix_std_m(cov_en: np.ndarray) -> float:
    """The largest horizontal standard deviation (m) of a 2x2 covariance (m^2)."""
    return math.sqrt(max(float(np.linalg.eigvalsh(np.asarray(cov_en, dtype=np.float64).reshape(2, 2))[-1]), 0.0))


def search_centre(
    last_good: Optional[Tuple[float, float]], fix: Optional[Tuple[float, float]]
) -> Optional[Tuple[float, float]]:
    """Where to search (lat, lon): the last good position (the caller dead-reckons it to the frame and drops it
    when older than ``last_good_max_age_s``), else the fix; None = the whole index (cold start)."""
    return last_good if last_good is not None else fix


def candidates(
    index: CityIndex, descriptor: np.ndarray, params: RelocParams, centre: Optional[Tuple[float, float]]
) -> List[Candidate]:
    """The ``top_k`` index entries most similar to the ground ``descriptor`` within ``radius_m`` of ``centre``
    (lat, lon degrees), or over the whole index when ``centre`` is None."""
    if centre is None:
        return index.search(descriptor, params.top_k)
    return index.search(descriptor, params.top_k, near_en=index.to_en(*centre), radius_m=params.radius_m)


def choose(
    confidences: Sequence[float],
    ambiguities: Sequence[float],
    params: RelocParams,
    prefer: Optional[int] = None,
    similarities: Optional[Sequence[float]] = None,
) -> Optional[int]:
    """Index of the chosen candidate: ``prefer`` (the search centre's own patch) when it qualifies, else the highest
    heat-map confidence among the qualifying ones; qualifying = confidence >= ``accept_confidence`` and ambiguity
    <= ``max_ambiguity`` (``centre_first`` False: the centre competes like any candidate). With ``rank``
    "similarity" the qualifying patches are ranked by ``similarities`` (ground vs patch descriptor cosines) instead
    of confidence. None when none qualifies. Heat-map confidences of look-alike patches elsewhere can be as
    high as the true one's (a model is sure of the best match within whatever patch it is shown), so a confident
    centre is kept rather than compared: a search moves the position only when its own patch fails."""

    def ok(i: int) -> bool:
        return bool(confidences[i] >= params.accept_confidence and ambiguities[i] <= params.max_ambiguity)

    if params.centre_first and prefer is not None and 0 <= prefer < len(confidences) and ok(prefer):
        return prefer
    key = confidences
    if params.rank == "similarity" and similarities is not None and len(similarities) == len(confidences):
        key = [s if math.isfinite(s) else -math.inf for s in similarities]
    best: Optional[int] = None
    for i, c in enumerate(key):
        if not ok(i):
            continue
        if best is None or c > key[best]:
            best = i
    return best


@dataclass
class RelocOutcome:
    """One search. ``reason`` (:data:`REASONS`), ``outcome`` (:data:`OUTCOMES`), ``centre`` (lat, lon) searched
    around (None = the whole index), ``candidates`` the index's answers, ``confidences`` the fine model's per
    scored candidate (same order; patches without imagery are not scored), ``chosen`` the index into
    ``candidates`` + [the search centre] (None = nothing kept; ``len(candidates)`` = the search centre itself,
    which is scored with the candidates), ``estimate`` the chosen candidate's per-frame estimate
    (:class:`xview_loc_ros.localizer.Estimate`), ``tracked`` the filter's pose after re-initialisation
    (``fusion: filter``), ``moved_m`` how far the kept position is from the position before (NaN = none
    before), ``seconds`` the search's run time, ``detail`` a line for the log."""

    stamp: float
    reason: str
    outcome: str
    centre: Optional[Tuple[float, float]]
    candidates: List[Candidate] = field(default_factory=list)
    confidences: List[float] = field(default_factory=list)
    chosen: Optional[int] = None
    estimate: Any = None
    tracked: Any = None
    moved_m: float = math.nan
    seconds: float = 0.0
    detail: str = ""


def check_model(config: Mapping[str, Any], outputs: Sequence[str], model_path: str) -> None:
    """Raise :class:`RelocUnavailable` when the model has no retrieval head (no ground descriptor output)."""
    if not has_retrieval(config) or GROUND_DESCRIPTOR not in outputs:
        raise RelocUnavailable(
            f"reloc_index is set but the model {model_path} has no retrieval head (outputs {list(outputs)}; "
            "train or export one with retrieval_dim > 0, or set reloc_index to '')"
        )


def open_index(path: str, model_path: str, config: Mapping[str, Any], outputs: Sequence[str]) -> CityIndex:
    """Load the city index at ``path`` for the model file ``model_path`` (its sha256 must be the index's) and
    check that its descriptors have the model's dimension; :class:`RelocUnavailable` otherwise."""
    check_model(config, outputs, model_path)
    try:
        index = load_index(path, file_sha256(model_path))
    except (IndexFileError, OSError) as e:
        raise RelocUnavailable(f"reloc_index: {e}") from None
    dim = int(config.get("retrieval_dim") or 0)
    if dim and index.dim != dim:
        raise RelocUnavailable(f"reloc_index: {path} has {index.dim}-value descriptors, the model makes {dim}")
    if len(index) == 0:
        raise RelocUnavailable(f"reloc_index: {path} has no entries")
    return index


def summary(counts: Mapping[str, int], last: Optional[RelocOutcome]) -> Dict[str, object]:
    """Diagnostics values of re-localization: ``reloc_searches``, ``reloc_candidates`` (scored, in all),
    ``reloc_reason_<r>``, ``reloc_outcome_<o>``, ``reloc_rate_limited`` and the last search's reason, outcome,
    candidates, best confidence and distance moved."""
    values: Dict[str, object] = {
        "reloc_searches": int(counts.get("searches", 0)),
        "reloc_candidates": int(counts.get("candidates", 0)),
        "reloc_rate_limited": int(counts.get("rate_limited", 0)),
    }
    for r in REASONS:
        values[f"reloc_reason_{r}"] = int(counts.get(f"reason_{r}", 0))
    for o in OUTCOMES:
        values[f"reloc_outcome_{o}"] = int(counts.get(f"outcome_{o}", 0))
    if last is not None:
        values["reloc_last_reason"] = last.reason
        values["reloc_last_outcome"] = last.outcome
        values["reloc_last_candidates"] = len(last.candidates)
        if last.confidences:
            values["reloc_last_best_confidence"] = float(max(last.confidences))
        if math.isfinite(last.moved_m):
            values["reloc_last_moved_m"] = float(last.moved_m)
    return values
