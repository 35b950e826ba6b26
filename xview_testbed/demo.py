# SPDX-License-Identifier: Apache-2.0
"""`make demo` / `xview-adapt demo` / `python -m xview_testbed.demo`: the whole mission on synthetic data.

1. a synthetic target city and two recorded drives through it (rosbag2, urban-canyon GNSS errors): one
   in the city's west district (adaptation), one in its east district (held out: the districts are a tenth
   of the city apart, and no held-out position is near an adaptation position);
2. a teacher trained on other city styles (the bundled checkpoint, or ``--retrain-teacher``);
3. the localizer node with the teacher on the adaptation drive (real rclpy/DDS, ``xview-loc replay``);
4. adaptation on the adaptation drive (extract -> pseudo labels -> auxiliary student -> filter ->
   final student; no ground truth), export to ONNX;
5. the node with the student (ONNX Runtime) and with the teacher on the held-out district's drive;
6. a table (terminal, ``results.md``, ``results.json``) and pictures in the output folder.

Every step is a command line of this package, printed before it runs, so any synthetic part can be
replaced by the user's own (tiles, bags, checkpoint). A step whose output exists and was made by the
same command from the same inputs is skipped (its record is in OUT/.steps/).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from offline_adapt.adapt.options import AdaptOptions, DistillOptions
from offline_adapt.evaluation.plots import error_cdf
from xview_loc_ros.cli import build_parser, run
from xview_loc_ros.fsutil import atomic_path, atomic_write_bytes, atomic_write_json
from xview_loc_ros.geo import LocalENU, PatchGeoref
from xview_loc_ros.tiles import AerialPatchBuilder, open_tile_source
from xview_testbed.replay import read_jsonl
from xview_testbed.steps import StepRunner
from xview_testbed.teacher import RECIPE as TEACHER
from xview_testbed.teacher import train_teacher

REPO = Path(__file__).resolve().parents[1]
BUNDLED_TEACHER = REPO / "models" / "teacher.pt"  # made by xview_testbed.teacher (models/README.md)
PARAMS_FILE = REPO / "config" / "localizer.yaml"


@dataclass
class DemoOptions:
    """Sizes: metres, frames, Hz. The target city is ``target_style`` moved ``amount`` toward ``toward``;
    ``frames`` camera frames are recorded in its west district for adaptation, ``test_frames`` in its east
    district for the held-out comparison (:func:`districts`)."""

    out: Path = Path("demo_out")
    # a target style (never in the teacher's source set, xview_testbed.teacher): the gap adaptation is for. The
    # former default, suburb moved half-way to downtown, was nearly a source city (teacher median 1.1 m there)
    target_style: str = "oldtown"
    toward: Optional[str] = None
    amount: float = 0.5
    blend_groups: str = "appearance,geometry"
    city_seed: int = 2
    city_size_m: float = 600.0
    frames: int = 180
    test_frames: int = 120
    rate_hz: float = 2.0
    drive_seed: int = 1
    teacher: Optional[Path] = None
    retrain_teacher: bool = False
    teacher_epochs: int = TEACHER.epochs
    epochs: int = DistillOptions().epochs
    keep: float = AdaptOptions().keep_pct
    threads: int = 2
    progress: bool = True


class Demo:
    def __init__(self, opts: DemoOptions) -> None:
        self.o = opts
        self.out = Path(opts.out)
        self.runner = StepRunner(self.out)
        self.run = self.runner.run

    def p(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def banner(self, step: int, title: str) -> None:
        print(f"\n=== [{step}/6] {title} " + "=" * max(0, 70 - len(title)), flush=True)

    # -- steps ------------------------------------------------------------------------------------
    def target(self) -> tuple:
        o = self.o
        self.banner(1, "synthetic target city and drives in two districts (rosbag2, urban-canyon GNSS)")
        blend = ["--toward", o.toward, "--amount", o.amount, "--blend-groups", o.blend_groups] if o.toward else []
        city = self.run(
            self.p("city"),
            "xview-loc",
            "synth",
            "city",
            "--style",
            o.target_style,
            *blend,
            "--seed",
            o.city_seed,
            "--size-m",
            o.city_size_m,
            "--zooms",
            "16-18",
            "--out",
            self.p("city"),
        )
        west, east = districts(o.city_size_m)
        bags = []
        for name, region, frames, seed in (
            ("drive_adapt", west, o.frames, o.drive_seed),
            ("drive_test", east, o.test_frames, o.drive_seed + 1),
        ):
            bags.append(
                self.run(
                    self.p(name),
                    "xview-loc",
                    "synth",
                    "drive",
                    "--city",
                    city,
                    "--out",
                    self.p(name),
                    "--frames",
                    frames,
                    "--rate",
                    o.rate_hz,
                    "--seed",
                    seed,
                    f"--region={','.join(f'{x:g}' for x in region)}",
                )
            )
        return city, bags[0], bags[1]

    def teacher(self) -> Path:
        o = self.o
        self.banner(2, "teacher trained on a different city style")
        if o.teacher is not None and not o.retrain_teacher:
            print(f"  teacher: {o.teacher}")
            return Path(o.teacher)
        if not o.retrain_teacher and BUNDLED_TEACHER.is_file():
            print(
                f"  bundled teacher {BUNDLED_TEACHER.relative_to(REPO)} (source styles {', '.join(TEACHER.styles)}; "
                "models/README.md has its recipe and errors; --retrain-teacher re-runs it)"
            )
            return BUNDLED_TEACHER
        return train_teacher(self.runner, self.p("teacher"), epochs=o.teacher_epochs)

    def replay(self, name: str, model: Path, tiles: str, bag: Path, heatmaps: bool) -> Path:
        extra = ["--heatmap-dir", self.p("heatmaps", name)] if heatmaps else []
        no_progress = [] if self.o.progress else ["--no-progress"]
        return self.run(
            self.p(f"replay_{name}.jsonl"),
            "xview-loc",
            "replay",
            "--bag",
            bag,
            "--params-file",
            PARAMS_FILE,
            "--model",
            model,
            "--tile-source",
            tiles,
            "--out",
            self.p(f"replay_{name}.jsonl"),
            *extra,
            *no_progress,
            "--ros-args",
            "-p",
            f"threads:={self.o.threads}",
            # the demo compares two MODELS frame by frame: the per-frame estimate, not the drive filter
            # (which also weighs GNSS and motion); est_* / localized then keep their per-frame meaning
            "-p",
            "fusion:=frame",
        )

    def adapt(self, teacher: Path, tiles: str, bag: Path) -> Path:
        o = self.o
        self.banner(4, "adaptation on the west district's drive, no ground truth used; export to ONNX")
        pairs = self.run(
            self.p("target_pairs"),
            "xview-adapt",
            "extract",
            "--bag",
            bag,
            "--tiles",
            tiles,
            "--model",
            teacher,
            "--out",
            self.p("target_pairs"),
            *([] if o.progress else ["--no-progress"]),
        )
        self.run(
            self.p("adapt", "student.pt"),
            "xview-adapt",
            "adapt",
            "--teacher",
            teacher,
            "--data",
            pairs,
            "--out",
            self.p("adapt"),
            "--epochs",
            o.epochs,
            "--keep",
            o.keep,
            "--select",
            "pseudo",
            "--eval-split",
            "all",
            "--threads",
            o.threads,
        )
        return self.run(
            self.p("student.onnx"),
            "xview-adapt",
            "export",
            "--model",
            self.p("adapt", "student.pt"),
            "--onnx",
            self.p("student.onnx"),
            "--data",
            pairs,
        )

    def execute(self) -> Dict[str, Any]:
        o = self.o
        t0 = time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        city, adapt_bag, test_bag = self.target()
        teacher = self.teacher()
        tiles = f"xyz:{city / 'tiles'}"
        self.banner(3, "the localizer node with the teacher on the adaptation drive (rclpy over DDS)")
        self.replay("teacher_adapt", teacher, tiles, adapt_bag, False)
        student = self.adapt(teacher, tiles, adapt_bag)
        self.banner(5, "the node on the held-out east district's drive: student (ONNX Runtime) and teacher")
        self.replay("student", student, tiles, test_bag, True)
        self.replay("teacher", teacher, tiles, test_bag, True)
        self.banner(6, "results")
        results = summarize(read(self.p("replay_teacher.jsonl")), read(self.p("replay_student.jsonl")))
        gap = held_out_distance_m(read(self.p("replay_teacher_adapt.jsonl")), read(self.p("replay_teacher.jsonl")))
        results.update(
            held_out_distance_m=gap,
            target=f"{o.target_style}" + (f" -> {o.toward} @ {o.amount:g}" if o.toward else ""),
            teacher=str(teacher),
            student=str(student),
            commands=self.runner.commands,
        )
        table = format_table(results)
        print(table)
        print(
            f"held-out district: every held-out frame is at least {gap['min']:.0f} m (median {gap['median']:.0f} m) "
            "from every adaptation frame"
        )
        verdict = results["verdict"]
        print(verdict)

        atomic_write_json(self.p("results.json"), results)
        atomic_write_bytes(self.p("results.md"), (table + "\n\n" + verdict + "\n").encode())
        mpp = float(json.loads(Path(f"{student}.json").read_text())["config"]["mpp"])
        make_figures(
            self.out,
            city,
            read(self.p("replay_teacher_adapt.jsonl")),
            read(self.p("replay_teacher.jsonl")),
            read(self.p("replay_student.jsonl")),
            mpp,
        )
        print(f"pictures: {self.p('trajectory.png')}, {self.p('heatmaps.png')}, {self.p('error_cdf.png')}")
        print(f"demo finished in {time.monotonic() - t0:.0f} s; outputs in {self.out}/")
        return results


def read(path: Path) -> List[Dict[str, Any]]:

    return read_jsonl(path)


def districts(city_size_m: float) -> Tuple[Tuple[float, float, float, float], Tuple[float, float, float, float]]:
    """(west, south, east, north) metres from the city centre of the adaptation (west) and held-out (east)
    districts: the drivable square (the city less 30 m at each edge) split at the centre, with a gap of a
    tenth of the city between them."""
    inner = city_size_m / 2 - 30.0
    gap = city_size_m / 20
    if gap >= inner:
        raise ValueError(f"city of {city_size_m:g} m is too small for two districts")
    return (-inner, -inner, -gap, inner), (gap, -inner, inner, inner)


def held_out_distance_m(adapt: List[Dict[str, Any]], test: List[Dict[str, Any]]) -> Dict[str, float]:
    """For each held-out frame, the distance (metres) to the nearest adaptation frame's true position: min,
    median and max over the held-out frames."""
    lat0, lon0 = adapt[0]["gt_lat"], adapt[0]["gt_lon"]
    enu = LocalENU(lat0, lon0, 0.0)

    def xy(recs: List[Dict[str, Any]]) -> np.ndarray:
        e, n, _ = enu.to_enu([r["gt_lat"] for r in recs], [r["gt_lon"] for r in recs], 0.0)
        return np.stack([e, n], -1)

    a, t = xy(adapt), xy(test)
    d = np.hypot(t[:, None, 0] - a[None, :, 0], t[:, None, 1] - a[None, :, 1]).min(axis=1)
    return {"min": float(d.min()), "median": float(np.median(d)), "max": float(d.max())}


def _stats(errors: Sequence[float]) -> Dict[str, Optional[float]]:
    e = np.asarray([x for x in errors if x is not None], float)
    return {"mean_m": float(e.mean()) if e.size else None, "median_m": float(np.median(e)) if e.size else None}


def summarize(teacher: List[Dict[str, Any]], student: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Table rows from the replays of the held-out part: GNSS fix (every frame), teacher, student (frames
    each localized), and both models on the frames both localized (the like-for-like comparison)."""
    if [r["frame"] for r in teacher] != [r["frame"] for r in student]:
        raise ValueError("teacher and student replays cover different frames; delete them and re-run")
    n = len(teacher)
    rows = {"GNSS fix": {**_stats([r["gnss_err_m"] for r in teacher]), "localized": n}}
    for name, recs in (("teacher", teacher), ("student", student)):
        rows[name] = {
            **_stats([r["est_err_m"] for r in recs if r["localized"]]),
            "localized": sum(r["localized"] for r in recs),
        }
    both = [i for i in range(n) if teacher[i]["localized"] and student[i]["localized"]]
    for name, recs in (("teacher", teacher), ("student", student)):
        rows[f"{name}, frames both localized"] = {
            **_stats([recs[i]["est_err_m"] for i in both]),
            "localized": len(both),
        }
    t, s = rows["teacher, frames both localized"]["median_m"], rows["student, frames both localized"]["median_m"]
    if t is None or s is None:
        verdict = "Measured: no frame was localized by both models; no comparison possible."
    else:
        word = "matched" if abs(s - t) < 0.005 else "beat" if s < t else "did not beat"
        verdict = (
            f"Measured on the {len(both)} held-out frames both localized: the student {word} the teacher "
            f"(median {s:.2f} m vs {t:.2f} m, mean {rows['student, frames both localized']['mean_m']:.2f} m vs "
            f"{rows['teacher, frames both localized']['mean_m']:.2f} m); GNSS median {rows['GNSS fix']['median_m']:.2f} m."
        )
    return {"frames": n, "rows": rows, "verdict": verdict}


def format_table(results: Dict[str, Any]) -> str:
    lines = [
        f"Held-out part of the drive: {results['frames']} camera frames; errors = horizontal distance to ground truth",
        "",
        "| estimate | frames localized | mean error (m) | median error (m) |",
        "|---|---|---|---|",
    ]
    for name, r in results["rows"].items():
        f = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
        lines.append(f"| {name} | {r['localized']}/{results['frames']} | {f(r['mean_m'])} | {f(r['median_m'])} |")
    return "\n".join(lines)


def make_figures(
    out: Path,
    city: Path,
    adapt: List[Dict[str, Any]],
    teacher: List[Dict[str, Any]],
    student: List[Dict[str, Any]],
    mpp: float,
) -> None:
    """trajectory.png (truth, GNSS, teacher on the adaptation drive, student on the held-out drive over the
    aerial map), heatmaps.png (the node's ~/heatmap overlays of four evenly spaced held-out frames, teacher vs
    student, with the ground truth placed in the patch of ``mpp`` m/px centred on the frame's GNSS fix),
    error_cdf.png (held-out errors)."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig, name):
        with atomic_path(out / name) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)

    # trajectory on an aerial image cut from the city's tiles, in ENU metres at the drive's centre
    both_drives = adapt + teacher
    lat = np.array([r["gt_lat"] for r in both_drives])
    lon = np.array([r["gt_lon"] for r in both_drives])
    enu = LocalENU(float(lat.mean()), float(lon.mean()), 0.0)

    def xy(recs, kind):
        pts = [
            enu.to_enu(r[f"{kind}_lat"], r[f"{kind}_lon"], 0.0)[:2] for r in recs if r.get(f"{kind}_lat") is not None
        ]
        return np.array(pts, float).reshape(-1, 2)

    half = float(np.abs(xy(both_drives, "gt")).max()) + 40.0
    size = 800
    src = open_tile_source(f"xyz:{city / 'tiles'}")
    try:
        patch = AerialPatchBuilder(src, size, 2 * half / size, allow_missing=True).build(
            float(lat.mean()), float(lon.mean())
        )
    finally:
        src.close()
    fig, ax = plt.subplots(figsize=(7.5, 7.5))
    ax.imshow(patch.image, extent=(-half, half, -half, half))
    for recs, label in ((adapt, "ground truth"), (teacher, None)):
        ax.plot(*xy(recs, "gt").T, "-", color="lime", lw=2, label=label)
    ax.plot(*xy(both_drives, "gnss").T, ".", color="orange", ms=3, label="GNSS fix")
    ax.plot(*xy(adapt, "est").T, "x", color="deepskyblue", ms=4, label="teacher (adaptation drive, west)")
    ax.plot(*xy(student, "est").T, "+", color="magenta", ms=5, label="student (held-out drive, east)")
    ax.set_xlabel("east [m]")
    ax.set_ylabel("north [m]")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("drives through the target city's two districts")
    save(fig, "trajectory.png")

    # heat-map overlays from the node (~/heatmap, also sent for gated frames) of the same frames, teacher vs student
    both = [i for i in range(len(student)) if student[i].get("heatmap") and teacher[i].get("heatmap")]
    picks = [both[int(k)] for k in np.linspace(0, len(both) - 1, min(4, len(both)))] if both else []
    fig, axes = plt.subplots(max(1, len(picks)), 2, figsize=(6, 3 * max(1, len(picks))), squeeze=False)
    for row, i in enumerate(picks):
        for col, (name, recs) in enumerate((("teacher", teacher), ("student", student))):
            img = cv2.cvtColor(cv2.imread(str(out / recs[i]["heatmap"])), cv2.COLOR_BGR2RGB)
            axes[row, col].imshow(img)
            r = recs[i]
            gu, gv = PatchGeoref(r["gnss_lat"], r["gnss_lon"], mpp, img.shape[1]).latlon_to_pixel(
                r["gt_lat"], r["gt_lon"]
            )
            axes[row, col].plot(
                float(gu) - 0.5, float(gv) - 0.5, "o", color="magenta", ms=5
            )  # imshow centres pixel i at i
            err = "gated" if recs[i]["est_err_m"] is None else f"{recs[i]['est_err_m']:.1f} m"
            axes[row, col].set_title(f"{name}, frame {recs[i]['frame']}: {err}", fontsize=9)
            axes[row, col].axis("off")
    if not picks:
        axes[0, 0].text(0.5, 0.5, "no frame localized by both models", ha="center")
    fig.suptitle("node ~/heatmap: white + GNSS fix, green o estimate; magenta dot ground truth", fontsize=9)
    fig.tight_layout()
    save(fig, "heatmaps.png")

    error_cdf(
        {
            "GNSS fix": [r["gnss_err_m"] for r in teacher if r["gnss_err_m"] is not None],
            "teacher": [r["est_err_m"] for r in teacher if r["localized"]],
            "student": [r["est_err_m"] for r in student if r["localized"]],
        },
        out / "error_cdf.png",
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DemoOptions()
    p.add_argument("--out", default=str(d.out), help="output folder (re-running reuses what it holds)")
    p.add_argument("--target-style", default=d.target_style, help="style of the target city (preset or YAML)")
    p.add_argument("--toward", default=d.toward, help="blend the target style toward this one ('' = no blend)")
    p.add_argument("--amount", type=float, default=d.amount, help="blend amount 0..1 toward --toward")
    p.add_argument("--blend-groups", default=d.blend_groups, help="style groups blended toward --toward (or all)")
    p.add_argument("--city-seed", type=int, default=d.city_seed, help="layout seed of the target city")
    p.add_argument("--city-size-m", type=float, default=d.city_size_m, help="side of the target city, metres")
    p.add_argument("--frames", type=int, default=d.frames, help="camera frames of the adaptation drive (west district)")
    p.add_argument(
        "--test-frames", type=int, default=d.test_frames, help="camera frames of the held-out drive (east district)"
    )
    p.add_argument("--rate-hz", type=float, default=d.rate_hz, help="camera frame rate of the drive, Hz")
    p.add_argument(
        "--drive-seed", type=int, default=d.drive_seed, help="route and GNSS error seed (the held-out drive: +1)"
    )
    p.add_argument("--teacher", default=None, help="teacher checkpoint (default: the bundled models/teacher.pt)")
    p.add_argument(
        "--retrain-teacher",
        action="store_true",
        help="train the teacher here with the bundled one's recipe (xview_testbed.teacher; about an hour on 2 CPU cores)",
    )
    p.add_argument("--teacher-epochs", type=int, default=d.teacher_epochs, help="with --retrain-teacher: epochs")
    p.add_argument("--epochs", type=int, default=d.epochs, help="student epochs (auxiliary and final)")
    p.add_argument("--keep", type=float, default=d.keep, help="T: %% of pseudo labels kept by the filter")
    p.add_argument("--threads", type=int, default=d.threads, help="CPU threads for torch and the node")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def options_from_args(args: argparse.Namespace) -> DemoOptions:
    return DemoOptions(
        out=Path(args.out),
        target_style=args.target_style,
        toward=args.toward or None,
        amount=args.amount,
        blend_groups=args.blend_groups,
        city_seed=args.city_seed,
        city_size_m=args.city_size_m,
        frames=args.frames,
        test_frames=args.test_frames,
        rate_hz=args.rate_hz,
        drive_seed=args.drive_seed,
        teacher=Path(args.teacher) if args.teacher else None,
        retrain_teacher=args.retrain_teacher,
        teacher_epochs=args.teacher_epochs,
        epochs=args.epochs,
        keep=args.keep,
        threads=args.threads,
        progress=not args.no_progress,
    )


HELP = (
    "Run the whole mission on synthetic data: target city + recorded drives in two districts, teacher (bundled, "
    "other styles), the node on the adaptation drive, adaptation on it, export to ONNX, the node with student and "
    "teacher on the held-out district's drive; prints a table (errors in metres vs ground truth) and writes pictures to --out. "
    "Every step is printed as the command it runs; steps whose output exists and was made by the same command "
    "from the same inputs are skipped."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="the whole mission on synthetic data (make demo)", description=HELP)
    add_arguments(p)
    p.set_defaults(func=lambda a: (Demo(options_from_args(a)).execute(), 0)[1])


def main(argv: Optional[List[str]] = None) -> int:

    parser = build_parser("python -m xview_testbed.demo", HELP, ["xview_testbed.demo"])
    return run(parser, ["demo"] + list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
