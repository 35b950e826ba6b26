# SPDX-License-Identifier: Apache-2.0
"""The adaptation pipeline in one run directory (paper §3.2; DESIGN §5).

RUN/pseudo/   teacher pass (pseudo_labels.npz, manifest.json, teacher_predictions.jsonl)
RUN/aux/      auxiliary student trained on all pseudo-labelled pairs (+ predictions.jsonl)
RUN/filter/   teacher-vs-auxiliary distances, kept.json (T % smallest), report and histogram
RUN/final/    final student trained on the kept pairs (the teacher again as initialisation)
RUN/student.pt  the final student with its lineage (teacher sha256, data set, flags, selection)
RUN/report/   per-pair teacher / aux / student predictions, summary (teacher vs student) and,
              where GT exists, Fig. 4-like (error vs teacher-student distance) and Fig. 7-like
              (histogram of the change in error) plots.

RUN/teacher_bn/  (``--bn ground-reestimate`` only) the round's teacher with its ground branch's
              batch-norm statistics re-estimated on the target pairs: the teacher that labels the
              pairs and that the students start from
RUN/round<k>/   rounds k >= 2 (``--rounds``): the same step folders, with round k-1's final student
              as the teacher; RUN/student.pt is the last round's final student

Every step records ``done.json`` (its inputs' fingerprint and its outputs' sha256) and is skipped
when that verifies; a step whose inputs changed is redone from scratch; a killed training step
resumes from its last epoch (training.fit's last.pt). A redone round redoes the rounds after it
(their teacher's sha256 changed). T = 100 % skips the auxiliary student and the filter.
``bn_reestimate_only`` replaces the students by the batch-norm re-estimation control (RUN/bn/).

With ``--gnss-prior`` the filter compares the auxiliary student with the pseudo labels (the
posterior of heat map and fix), not with the teacher's own predictions: what it filters are labels.

RUN/drive/    (``--pseudo-labels drive-smooth`` or ``--drive-consistency-m D``) the teacher's heat maps
              smoothed along each drive (offline_adapt.adapt.drive_smooth): smoothed.jsonl, one row per
              pair. With drive-smooth, the smoothed means are the pseudo labels of both students (and
              what the filter compares the auxiliary student with); with D > 0 the final student trains
              on the pairs kept by the filter (all when T = 100) whose teacher mode lies within D m of
              the smoothed track (RUN/drive/consistency.json: what was kept).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from offline_adapt.adapt import drive_smooth, filtering
from offline_adapt.adapt.distill import bn_reestimate, train_student
from offline_adapt.adapt.options import AdaptOptions, DistillOptions  # noqa: F401 (re-exported: the pipeline's options)
from offline_adapt.adapt.pseudo_labels import (
    MANIFEST_NAME,
    PREDICTIONS_NAME,
    CacheError,
    PseudoLabels,
    ensure_pseudo_labels,
    load_pseudo_labels,
    read_predictions,
)
from offline_adapt.data.dataset import PairDataset, dataset_fingerprint
from offline_adapt.data.torch_data import PairTorchDataset
from offline_adapt.evaluation.evaluate import predict, summarize
from offline_adapt.evaluation.plots import pyplot
from offline_adapt.train.training import default_device, dist_info
from xview_loc_ros.fsutil import DONE_NAME, OutputLock, StepCache, atomic_path, atomic_write_json, file_sha256
from xview_loc_ros.models import load_checkpoint, save_checkpoint
from xview_loc_ros.models.checkpoint import read_checkpoint

log = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"
DRIVE_STEP, SMOOTHED_NAME, CONSISTENCY_NAME = "drive", "smoothed.jsonl", "consistency.json"
REUSABLE_STEPS = ("pseudo", "aux")


@dataclass
class AdaptRun:
    """One round of an adaptation run: ``teacher`` adapted on ``data`` in the folder ``out``
    (RUN for round 1, RUN/round<k> for round k of ``--rounds``)."""

    teacher: str
    data: str
    out: Path
    opts: AdaptOptions
    round_index: int = 1

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if not Path(self.teacher).is_file():
            raise ValueError(f"--teacher {self.teacher}: file not found")
        self.teacher_sha256 = file_sha256(self.teacher)

        # K' left to the default is fixed (and K' checked against the teacher) here, before any step
        # runs, so step fingerprints and lineage name the value used
        self.opts = replace(self.opts, distill=self.opts.distill.resolved(read_checkpoint(self.teacher)["config"]))
        self.data_fingerprint = dataset_fingerprint(self.data)

        self.mpp = {r.id: float(r.mpp) for r in PairDataset(self.data).split(None)}

    def dir(self, name: str) -> Path:
        return self.out / name

    @property
    def gnss_std_m(self) -> Optional[float]:
        """The GNSS prior's fallback 1-sigma (m) when the prior is on, else None (heat map alone)."""
        return self.opts.gnss_std_m if self.opts.gnss_prior else None


def round_run(run: AdaptRun, k: int, teacher: str | Path) -> AdaptRun:
    """Round ``k`` >= 2 of ``run`` (round 1 itself), taught by ``teacher`` (round k-1's final student)."""
    if k == 1:
        return run
    return AdaptRun(str(teacher), run.data, run.out / f"round{k}", run.opts, round_index=k)


def _begin(step: StepCache) -> None:
    """Begin (or continue) a step; under torchrun rank 0 alone prepares the folder."""
    if dist_info()[0] != 0:
        step.folder.mkdir(parents=True, exist_ok=True)
        return
    step.start(resumable=True)


def _write_jsonl(path: Path, rows: List[Dict[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))


TEACHER_BN = "teacher_bn"


def round_teacher(run: AdaptRun, build: bool = True) -> str:
    """The checkpoint that labels the round's pairs and initialises its students: the round's teacher,
    or with ``--bn ground-reestimate`` that teacher with its ground-branch batch-norm statistics
    re-estimated on the target pairs (RUN/teacher_bn/teacher.pt, made here when ``build``)."""
    if run.opts.distill.bn != "ground-reestimate":
        return run.teacher
    d = run.opts.distill
    step = run.dir(TEACHER_BN)
    cache = StepCache(
        step,
        {
            "teacher_sha256": run.teacher_sha256,
            "data": run.data_fingerprint,
            "split": run.opts.split,
            "batch": d.batch,
            "seed": d.seed,
            "scope": "ground",
        },
    )
    path = step / "teacher.pt"
    if cache.done():
        return str(path)
    if not build:
        raise CacheError(f"{step}: no ground-branch batch-norm teacher yet; run `pseudo-label` first")
    if dist_info()[0] == 0:
        _begin(cache)
        ids = [r.id for r in PairDataset(run.data).split(run.opts.split)]
        model = bn_reestimate(run.teacher, run.data, ids, d.batch, d.device, d.seed, scope="ground")
        save_checkpoint(path, model, lineage=dict(lineage_info(run, TEACHER_BN), trained_on=len(ids)))
        cache.finish(["teacher.pt"])
        log.info("teacher with ground-branch batch norm re-estimated on %d target pairs: %s", len(ids), path)
    return str(path)


def pseudo_label_step(run: AdaptRun) -> PseudoLabels:
    """The teacher pass (and, when the options use it, the drive smoothing of its heat maps)."""
    d = run.opts.distill
    labels = ensure_pseudo_labels(
        round_teacher(run),
        run.data,
        run.dir("pseudo"),
        run.opts.split,
        d.batch,
        run.opts.topk,
        d.device,
        run.gnss_std_m,
    )
    if run.opts.uses_drive:
        drive_step(run, labels)
    return labels


def _teacher_labels(run: AdaptRun) -> PseudoLabels:
    hint = "run `pseudo-label` first (same --teacher, --data, --split, --topk, --gnss-prior, --bn)"
    try:
        return load_pseudo_labels(
            run.dir("pseudo"), round_teacher(run, build=False), run.data, run.opts.split, run.opts.topk, run.gnss_std_m
        )
    except CacheError as e:
        raise CacheError(f"{e}; {hint}") from e


def _smooth_options(run: AdaptRun) -> drive_smooth.SmoothOptions:
    return drive_smooth.SmoothOptions(gnss_std_m=run.opts.gnss_std_m)


def _drive_cache(run: AdaptRun) -> StepCache:
    return StepCache(
        run.dir(DRIVE_STEP),
        {
            "labels_sha256": file_sha256(run.dir("pseudo") / "pseudo_labels.npz"),
            "data": run.data_fingerprint,
            "smoother": _smooth_options(run).fingerprint(),
        },
    )


def drive_step(run: AdaptRun, labels: Optional[PseudoLabels] = None) -> List[Dict[str, Any]]:
    """The teacher's heat maps smoothed along each drive (RUN/drive/smoothed.jsonl); cached."""
    cache = _drive_cache(run)
    path = run.dir(DRIVE_STEP) / SMOOTHED_NAME
    if cache.done():
        return read_predictions(path)
    labels = labels if labels is not None else _teacher_labels(run)
    rows = drive_smooth.smooth_pairs(PairDataset(run.data).split(None), labels, _smooth_options(run))
    if dist_info()[0] == 0:
        _begin(cache)
        _write_jsonl(path, rows)
        cache.finish([SMOOTHED_NAME], segments=len({r["segment"] for r in rows}))
        log.info("drive smoothing: %d pairs in %d drive pieces", len(rows), len({r["segment"] for r in rows}))
    return rows


def _drive_rows(run: AdaptRun) -> List[Dict[str, Any]]:
    if _drive_cache(run).why_not_done() is not None:
        raise CacheError(f"{run.dir(DRIVE_STEP)}: no drive smoothing for these pseudo labels; run `pseudo-label` first")
    return read_predictions(run.dir(DRIVE_STEP) / SMOOTHED_NAME)


def _drive_inputs(run: AdaptRun) -> Dict[str, Any]:
    """What the drive options add to a step's cache key (nothing when they are off: older runs stay done)."""
    if not run.opts.uses_drive:
        return {}
    return {
        "drive_sha256": file_sha256(run.dir(DRIVE_STEP) / SMOOTHED_NAME),
        "pseudo_labels": run.opts.pseudo_labels,
        "drive_consistency_m": run.opts.drive_consistency_m,
    }


def _labels(run: AdaptRun) -> PseudoLabels:
    """The pseudo labels the students learn: the teacher's, or with ``--pseudo-labels drive-smooth`` the
    drive-smoothed positions."""
    labels = _teacher_labels(run)
    if run.opts.pseudo_labels == "drive-smooth":
        smoothed = {r["id"]: (r["u"], r["v"]) for r in _drive_rows(run)}
        uv = np.asarray([smoothed[i] for i in labels.ids], np.float32).reshape(-1, 2)
        labels = replace(labels, uv=uv, uv_argmax=uv.copy())
    return labels


def _predict_ids(
    model_path: str, data_dir: str, ids: Optional[List[str]], split: Optional[str], batch: int
) -> List[Dict[str, Any]]:

    model, _ = load_checkpoint(model_path, map_location="cpu")
    model.to(default_device()).eval()
    data = PairDataset(data_dir)
    recs = data.split(split)
    if ids is not None:
        by_id = {r.id: r for r in recs}
        recs = [by_id[i] for i in ids]
    if not recs:
        return []
    import torch

    dev = next(model.parameters()).device
    s = int(model.config["aerial_size"])
    level_uv: List[np.ndarray] = []

    def run_levels(g: np.ndarray, a: np.ndarray):
        with torch.no_grad():
            out = model(torch.from_numpy(g).to(dev), torch.from_numpy(a).to(dev))
        cols = []
        for h in out.heatmaps:  # each level's argmax cell centre in patch pixels (max over orientation bins)
            m = h.float().amax(dim=1).flatten(1).argmax(dim=1).cpu().numpy()
            n = h.shape[-1]
            cols.append(np.stack([(m % n + 0.5) * s / n, (m // n + 0.5) * s / n], axis=1))
        level_uv.append(np.stack(cols, axis=1))  # (B, K, 2)
        ori = None if out.orientation is None else out.orientation.float().cpu().numpy()
        return out.heatmaps[-1].float().cpu().numpy(), ori

    preds, _ = predict(run_levels, PairTorchDataset(data, recs, model.config, require_gt=False), batch)
    for p, uv in zip(preds, np.concatenate(level_uv)):
        p["level_uv"] = uv.tolist()
    return preds


def level_errors_m(preds: List[Dict[str, Any]], mpp: Dict[str, float]) -> Optional[List[float]]:
    """Mean error (m) of each heat-map level's argmax, coarse -> fine; None without GT."""
    rows = [
        np.hypot(*(np.asarray(p["level_uv"]) - [p["gt_u"], p["gt_v"]]).T) * mpp[p["id"]] for p in preds if "gt_u" in p
    ]
    return np.mean(rows, axis=0).tolist() if rows else None


def student_step(run: AdaptRun, stage: str) -> Path:
    """Train the ``aux`` (all pairs) or ``final`` (kept pairs) student; returns STAGE/student.pt."""
    if stage not in ("aux", "final"):
        raise ValueError(f"--stage must be aux or final, got {stage!r}")
    labels = _labels(run)
    ids = list(labels.ids)
    kept_sha = None
    if stage == "final" and run.opts.keep_pct < 100:
        kept_path = run.dir("filter") / filtering.KEPT_NAME
        if not kept_path.is_file():
            raise ValueError(f"{kept_path}: missing; run `filter` first (or use --keep 100 for no outlier filtering)")
        kept = json.loads(kept_path.read_text())
        if kept.get("keep_pct") != run.opts.keep_pct:
            raise ValueError(
                f"{kept_path}: made with --keep {kept.get('keep_pct')}, not {run.opts.keep_pct}; re-run `filter`"
            )
        ids, kept_sha = list(kept["ids"]), file_sha256(kept_path)
    if stage == "final" and run.opts.drive_consistency_m > 0:
        ids = _consistent(run, ids)
    step = run.dir(stage)
    init = round_teacher(run)
    cache = StepCache(
        step,
        {
            "teacher_sha256": run.teacher_sha256 if init == run.teacher else file_sha256(init),
            "labels_sha256": file_sha256(run.dir("pseudo") / "pseudo_labels.npz"),
            "data": run.data_fingerprint,
            "kept_sha256": kept_sha,
            "options": run.opts.distill.fingerprint(),
            **_drive_inputs(run),
        },
    )
    if cache.done():
        log.info("%s student: done (%s)", stage, step)
        return step / "student.pt"
    _begin(cache)
    lineage = lineage_info(run, stage)
    res = train_student(init, run.data, labels, ids, step, run.opts.distill, resume=True, extra={"lineage": lineage})
    if dist_info()[0] != 0:  # under torchrun rank 0 alone writes the step's outputs
        return step / "student.pt"
    model, ckpt = load_checkpoint(res["best_path"])
    save_checkpoint(
        step / "student.pt",
        model,
        lineage=dict(
            lineage,
            selected_epoch=res["best_epoch"],
            selection=res["selection"],
            selection_value=res["best_value"],
            trained_on=res["trained_on"],
        ),
    )
    outputs = ["student.pt"]
    if stage == "aux":
        _write_jsonl(
            step / "predictions.jsonl",
            _predict_ids(str(step / "student.pt"), run.data, labels.ids, None, run.opts.distill.batch),
        )
        outputs.append("predictions.jsonl")
    cache.finish(outputs, selected_epoch=res["best_epoch"], selection=res["selection"])
    log.info("%s student: %s (epoch %s, %s)", stage, step / "student.pt", res["best_epoch"], res["selection"])
    return step / "student.pt"


def _consistent(run: AdaptRun, ids: List[str]) -> List[str]:
    """``ids`` less the pairs whose teacher mode is more than --drive-consistency-m from the smoothed track;
    RUN/drive/consistency.json records the decision (and, where the pairs have GT, the label errors)."""
    rows = _drive_rows(run)
    ok = set(drive_smooth.consistent_ids(rows, run.opts.drive_consistency_m))
    kept = [i for i in ids if i in ok]
    if not kept:
        raise ValueError(
            f"--drive-consistency-m {run.opts.drive_consistency_m:g}: no pair of the {len(ids)} left is consistent "
            "with its drive's smoothed track"
        )
    by_id = {r["id"]: r for r in rows}
    report: Dict[str, Any] = {"drive_consistency_m": run.opts.drive_consistency_m, "count": len(ids), "kept": len(kept)}
    for name, sel in (("all", ids), ("kept", kept)):
        for key in ("teacher_err_m", "smoothed_err_m"):
            e = [by_id[i][key] for i in sel if key in by_id[i]]
            if e:
                report[f"{key[:-2]}{name}_mean_m"] = float(np.mean(e))
                report[f"{key[:-2]}{name}_median_m"] = float(np.median(e))
    if dist_info()[0] == 0:
        atomic_write_json(run.dir(DRIVE_STEP) / CONSISTENCY_NAME, dict(report, ids=kept))
    log.info(
        "drive consistency: %d of %d pairs within %g m of the smoothed track",
        len(kept),
        len(ids),
        run.opts.drive_consistency_m,
    )
    return kept


def filter_step(run: AdaptRun) -> List[str]:
    """Teacher vs auxiliary distances on the pseudo-labelled pairs -> kept ids (T % smallest)."""
    labels = _labels(run)
    aux_pred = run.dir("aux") / "predictions.jsonl"
    if StepCache(run.dir("aux"), None).why_not_done(check_inputs=False) is not None or not aux_pred.is_file():
        raise ValueError(f"{run.dir('aux')}: no finished auxiliary student; run `train-student --stage aux` first")
    step = run.dir("filter")
    cache = StepCache(
        step,
        {
            "labels_sha256": file_sha256(run.dir("pseudo") / "pseudo_labels.npz"),
            "aux_sha256": file_sha256(aux_pred),
            "keep_pct": run.opts.keep_pct,
            **(
                {"drive_sha256": file_sha256(run.dir(DRIVE_STEP) / SMOOTHED_NAME)}
                if run.opts.pseudo_labels != "teacher"
                else {}
            ),
        },
    )
    if cache.done():
        log.info("filter: done (%s)", step)
        return json.loads((step / filtering.KEPT_NAME).read_text())["ids"]
    _begin(cache)
    teacher = read_predictions(run.dir("pseudo") / PREDICTIONS_NAME)
    if labels.gnss_std_m is not None or run.opts.pseudo_labels != "teacher":
        # the labels are the posterior or the smoothed positions: filter those, not the raw teacher
        row = labels.row_of()
        teacher = [dict(p, u=float(labels.uv[row[p["id"]], 0]), v=float(labels.uv[row[p["id"]], 1])) for p in teacher]
    mpp = {i: float(m) for i, m in zip(labels.ids, labels.mpp)}
    dist = filtering.prediction_distances_m(teacher, read_predictions(aux_pred), mpp)
    kept = filtering.select_kept(dist, run.opts.keep_pct)
    errors = {p["id"]: p["err_m"] for p in teacher if "err_m" in p}
    report = filtering.filter_report(dist, kept, run.opts.keep_pct, errors)
    filtering.write_filter_outputs(step, dist, kept, report)
    cache.finish([filtering.KEPT_NAME, filtering.REPORT_NAME])
    log.info(
        "filter: kept %d of %d pairs (teacher-aux distance <= %.2f m)",
        report["kept"],
        report["count"],
        report["threshold_m"] or 0.0,
    )
    return kept


def lineage_info(run: AdaptRun, stage: str) -> Dict[str, Any]:
    """``teacher`` is the round's teacher (round k >= 2: round k-1's final student)."""
    return {
        "teacher": str(run.teacher),
        "teacher_sha256": run.teacher_sha256,
        "data": str(run.data),
        "data_fingerprint": run.data_fingerprint,
        "stage": stage,
        "round": run.round_index,
        "flags": run.opts.to_dict(),
        "method": "bn-reestimate" if run.opts.bn_reestimate_only else "self-distillation",
    }


def bn_step(run: AdaptRun) -> Path:

    step = run.dir("bn")
    inputs: Dict[str, Any] = {
        "teacher_sha256": run.teacher_sha256,
        "data": run.data_fingerprint,
        "split": run.opts.split,
        "batch": run.opts.distill.batch,
        "seed": run.opts.distill.seed,
    }
    if run.opts.bn_reestimate_scope != "all":  # only then: controls made before scopes existed stay done
        inputs["scope"] = run.opts.bn_reestimate_scope
    cache = StepCache(step, inputs)
    if cache.done():
        return step / "student.pt"
    _begin(cache)
    ids = [r.id for r in PairDataset(run.data).split(run.opts.split)]
    d = run.opts.distill
    model = bn_reestimate(run.teacher, run.data, ids, d.batch, d.device, d.seed, run.opts.bn_reestimate_scope)
    save_checkpoint(step / "student.pt", model, lineage=dict(lineage_info(run, "bn"), trained_on=len(ids)))
    cache.finish(["student.pt"])
    return step / "student.pt"


def report_step(run: AdaptRun, student: Path, rounds: Sequence[AdaptRun] = ()) -> Dict[str, Any]:
    """Predictions of teacher / aux / student on the eval split (and the adaptation pairs), the
    summary table and, with GT, the Fig. 4 / Fig. 7-like plots. ``rounds``: every round's run of a
    ``--rounds`` run (round 1 is ``run``): aux is then the last round's, and ``round<k>`` the final
    student of each round before the last. With ``--bn ground-reestimate``, ``teacher_bn`` is round 1's
    teacher after the re-estimation alone."""
    out = run.dir("report")
    models = {"teacher": run.teacher, "student": str(student)}
    last = rounds[-1] if rounds else run
    if (last.dir("aux") / "student.pt").is_file() and not run.opts.bn_reestimate_only:
        models["aux"] = str(last.dir("aux") / "student.pt")
    for r in rounds[:-1]:
        models[f"round{r.round_index}"] = str(r.dir("final") / "student.pt")
    if run.opts.distill.bn == "ground-reestimate" and not run.opts.bn_reestimate_only:
        models["teacher_bn"] = round_teacher(run, build=False)  # round 1's: what re-estimation alone gives
    cache = StepCache(
        out,
        {
            "models": {k: file_sha256(v) for k, v in models.items()},
            "data": run.data_fingerprint,
            "splits": [run.opts.eval_split, run.opts.split],
        },
    )
    if cache.done():
        return json.loads((out / SUMMARY_NAME).read_text())
    _begin(cache)
    summary: Dict[str, Any] = {
        "teacher": str(run.teacher),
        "student": str(student),
        "data": str(run.data),
        "splits": {},
    }
    for split in dict.fromkeys([run.opts.eval_split, run.opts.split]):
        preds = {
            name: _predict_ids(path, run.data, None, split, run.opts.distill.batch) for name, path in models.items()
        }
        if not preds["teacher"]:
            continue
        tag = split or "all"
        rows = []
        for k, t in enumerate(preds["teacher"]):
            row: Dict[str, Any] = {"id": t["id"]}
            if "gt_u" in t:
                row.update(gt_u=t["gt_u"], gt_v=t["gt_v"], prior_m=t["prior_m"])
            for name, p in preds.items():
                q = p[k]
                row[name] = {key: q[key] for key in ("u", "v", "lat", "lon", "confidence", "err_m") if key in q}
            mpp = run.mpp[t["id"]]
            row["teacher_student_m"] = float(
                np.hypot(t["u"] - preds["student"][k]["u"], t["v"] - preds["student"][k]["v"]) * mpp
            )
            rows.append(row)
        _write_jsonl(out / f"predictions_{tag}.jsonl", rows)
        summary["splits"][tag] = {
            name: dict(summarize(p), level_mean_m=level_errors_m(p, run.mpp)) for name, p in preds.items()
        }
        if all("err_m" in p for p in preds["teacher"]):
            te = np.asarray([p["err_m"] for p in preds["teacher"]])
            se = np.asarray([p["err_m"] for p in preds["student"]])
            dist = np.asarray([r["teacher_student_m"] for r in rows])
            _plot_fig4(te, se, dist, out / f"fig4_{tag}.png")
            _plot_fig7(se - te, out / f"fig7_{tag}.png")
    atomic_write_json(out / SUMMARY_NAME, summary)
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text(summary_table(summary))
    cache.finish([SUMMARY_NAME])
    return summary


def summary_table(summary: Dict[str, Any]) -> str:
    lines = [
        "| split | model | pairs | mean [m] | median [m] | centre guess mean [m] | per-level argmax mean [m], coarse -> fine |",
        "|---|---|---|---|---|---|---|",
    ]
    for split, models in summary["splits"].items():
        for name, m in models.items():
            if "mean_m" in m:
                levels = " / ".join(f"{x:.2f}" for x in m.get("level_mean_m") or [])
                lines.append(
                    f"| {split} | {name} | {m['count']} | {m['mean_m']:.2f} | {m['median_m']:.2f} | "
                    f"{m['prior_mean_m']:.2f} | {levels} |"
                )
            else:
                lines.append(f"| {split} | {name} | {m['count_total']} | (no GT) | (no GT) | | |")
    return "\n".join(lines) + "\n"


def _plot_fig4(teacher_err: np.ndarray, student_err: np.ndarray, dist: np.ndarray, path: Path) -> None:

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharex=True, sharey=True)
    for ax, err, name in ((axes[0], teacher_err, "teacher"), (axes[1], student_err, "student")):
        ax.scatter(dist, err, s=6, alpha=0.6)
        ax.set_xlabel("teacher - student distance [m]")
        ax.set_ylabel(f"{name} error [m]")
        ax.set_title(f"{name}: mean {err.mean():.2f} m, median {np.median(err):.2f} m", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _plot_fig7(change: np.ndarray, path: Path) -> None:

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(change, bins=40, color="tab:purple", alpha=0.8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("student error - teacher error [m] (< 0: improved)")
    ax.set_ylabel("pairs")
    ax.set_title(f"improved {int((change < 0).sum())}, worse {int((change > 0).sum())}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def adapt_round(run: AdaptRun) -> Path:
    """One round: pseudo labels -> auxiliary student -> filter -> final student; returns the latter."""
    if run.round_index > 1:
        log.info("round %d of %d: teacher %s", run.round_index, run.opts.rounds, run.teacher)
    pseudo_label_step(run)
    if run.opts.keep_pct < 100:
        student_step(run, "aux")
        filter_step(run)
    return student_step(run, "final")


def run_adapt(run: AdaptRun) -> Dict[str, Any]:
    """All steps; returns the summary (see report_step). The run folder is locked while they run: two
    runs resuming one folder would each take the other's half-written steps for done."""
    with OutputLock(run.out, "adaptation run"):
        run.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            run.out / "adapt_config.json", {"teacher": run.teacher, "data": run.data, **run.opts.to_dict()}
        )
        rounds: List[AdaptRun] = []
        if run.opts.bn_reestimate_only:
            final = bn_step(run)
        else:
            final = Path(run.teacher)
            for k in range(1, run.opts.rounds + 1):
                r = round_run(run, k, final)  # round k's teacher: round k-1's final student
                rounds.append(r)
                final = adapt_round(r)
        student = run.out / "student.pt"
        if not student.is_file() or file_sha256(student) != file_sha256(final):
            with atomic_path(student) as tmp:
                shutil.copyfile(final, tmp)
        summary = report_step(run, student, rounds if len(rounds) > 1 else ())
    log.info("student: %s\n%s", student, summary_table(summary))
    return summary


def run_results(run_dir: str | Path) -> Dict[str, Any]:
    """What a finished run reports, for tools that compare runs (bench/crossarea.py): ``summary``
    (report_step's: per split and model, the metrics of evaluation.summarize and per-level errors)
    and ``filter_report`` (filtering.filter_report's, None when the run had no filter)."""
    run_dir = Path(run_dir)
    report = StepCache(run_dir / "report", None)
    why = report.why_not_done(check_inputs=False)
    if why is not None:
        raise ValueError(f"{run_dir}: no finished adaptation report ({why})")
    filt = run_dir / "filter"
    has_filter = StepCache(filt, None).why_not_done(check_inputs=False) is None
    return {
        "summary": json.loads((run_dir / "report" / SUMMARY_NAME).read_text()),
        "filter_report": json.loads((filt / filtering.REPORT_NAME).read_text()) if has_filter else None,
    }


def drive_results(run_dir: str | Path) -> List[Dict[str, Any]]:
    """The drive smoothing of a run (``--pseudo-labels drive-smooth`` / ``--drive-consistency-m``), for tools
    that compare label sources (bench/drive_consistency.py): RUN/drive/smoothed.jsonl's rows (see
    offline_adapt.adapt.drive_smooth.smooth_pairs); ValueError when the run has none."""
    step = Path(run_dir) / DRIVE_STEP
    why = StepCache(step, None).why_not_done(check_inputs=False)
    if why is not None:
        raise ValueError(f"{run_dir}: no finished drive smoothing ({why})")
    return read_predictions(step / SMOOTHED_NAME)


def reuse_steps(source_run: str | Path, run_dir: str | Path, steps: Sequence[str] = REUSABLE_STEPS) -> List[str]:
    """Seed a new run folder with the finished ``steps`` of another run on the same data (a sweep
    shares its teacher pass and, when only T differs, its auxiliary student). Each copied step is
    re-verified by the pipeline against the new run's own inputs and redone when they differ.
    Returns the steps copied."""
    source_run, run_dir = Path(source_run), Path(run_dir)
    copied = []
    for step in steps:
        if step not in REUSABLE_STEPS:
            raise ValueError(f"step {step!r} cannot be reused; reusable: {REUSABLE_STEPS}")
        src, dst = source_run / step, run_dir / step
        if (
            dst.exists()
            or StepCache(src, None, MANIFEST_NAME if step == "pseudo" else DONE_NAME).why_not_done(check_inputs=False)
            is not None
        ):
            continue
        shutil.copytree(src, dst)
        copied.append(step)
    return copied
