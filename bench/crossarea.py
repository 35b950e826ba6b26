"""Cross-area adaptation benchmark (issue 5, DESIGN §7), driven entirely through the CLIs.

    python -m bench.crossarea [--profile default|quick] [--out bench/out/crossarea] [--record bench/RESULTS.md]

Builds a source city (style A) and a target city (style B), labelled pairs in both (target
split 70/10/20), trains the teacher on A and the oracle on B's train split (with GT), then runs
every adaptation variant on B's unlabelled train split and evaluates all of them on B's test
split: Teacher, batch-norm re-estimation, Student-M-OF, Student+M-OF, Student+M+OF (the paper's
method), entropy minimisation, Oracle; sweeps over K' (levels), T (keep %) and the gap size.
Each step is skipped when its output exists, so an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import yaml

HERE = Path(__file__).resolve().parent
VARIANT_FLAGS = {
    "bn": ["--bn-reestimate-only"],
    "st_-M-OF": ["--pseudo-gt", "heatmap", "--keep", "100"],
    "st_+M-OF": ["--pseudo-gt", "mode", "--keep", "100"],
    "st_+M+OF": ["--pseudo-gt", "mode", "--keep", "80"],
}
LABELS = {
    "teacher": "Teacher", "bn": "BN re-estimation", "st_-M-OF": "Student -M -OF", "st_+M-OF": "Student +M -OF",
    "st_+M+OF": "Student +M +OF (paper)", "entropy_min": "Entropy minimisation", "oracle": "Oracle",
}


def sh(cmd: List[str], log: Path) -> None:
    """Run one CLI step; its output goes to ``log`` and the command is printed for the record."""
    print("$", " ".join(cmd), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise SystemExit(f"step failed ({r.returncode}): {' '.join(cmd)}; see {log}")


def loc(*args: str) -> List[str]:
    return [sys.executable, "-m", "xview_loc_ros.cli", *args]


def adapt(*args: str) -> List[str]:
    return [sys.executable, "-m", "offline_adapt", *args]


class Bench:
    def __init__(self, cfg: Dict[str, Any], profile: str, out: Path, threads: int) -> None:
        self.cfg, self.p, self.out, self.threads = cfg, cfg["profiles"][profile], out, str(threads)
        self.timings: Dict[str, float] = {}

    def timed(self, key: str, output: Path, cmd: List[str]) -> None:
        if output.exists():
            return
        t0 = time.time()
        sh(cmd, self.out / "logs" / f"{key}.log")
        self.timings[key] = round(time.time() - t0, 1)

    def city(self, name: str, style: Dict[str, Any], seed: int) -> Path:
        d = self.out / f"city_{name}"
        c, where = self.cfg["city"], self.cfg["location"]
        cmd = loc("synth", "city", "--style", style["style"], "--seed", str(seed), "--size-m", str(c["size_m"]),
                  "--res-m", str(c["res_m"]), "--zooms", str(c["zooms"]), "--lat", str(where["lat"]),
                  "--lon", str(where["lon"]), "--out", str(d))
        if style.get("toward"):
            cmd += ["--toward", style["toward"], "--amount", str(style["amount"]), "--blend-groups", style["groups"]]
        self.timed(f"city_{name}", d / "city.json", cmd)
        return d

    def pairs(self, name: str, city: Path, n: int, seed: int) -> Path:
        d = self.out / f"pairs_{name}"
        self.timed(f"pairs_{name}", d / "index.jsonl",
                   loc("synth", "pairs", "--city", str(city), "--n", str(n), "--seed", str(seed), "--out", str(d)))
        return d

    def train(self, name: str, data: Path, spec: Dict[str, Any], seed: int, init: str | None = None) -> Path:
        d = self.out / f"train_{name}"
        cmd = adapt("train", "--data", str(data), "--config", "small", "--out", str(d), "--seed", str(seed),
                    "--epochs", str(spec["epochs"]), "--batch", str(spec["batch"]), "--lr", str(spec["lr"]),
                    "--threads", self.threads)
        if init:
            cmd += ["--init", init]
        self.timed(f"train_{name}", d / "best.pt", cmd)
        return d / "best.pt"

    def evaluate(self, name: str, model: Path, data: Path) -> Dict[str, Any]:
        d = self.out / f"eval_{name}"
        self.timed(f"eval_{name}", d / "metrics.json",
                   adapt("evaluate", "--model", str(model), "--data", str(data), "--split", "test", "--threads",
                         self.threads, "--out", str(d)))
        return json.loads((d / "metrics.json").read_text())

    def adapt(self, name: str, teacher: Path, data: Path, flags: List[str], seed: int) -> Dict[str, Any]:
        d = self.out / f"adapt_{name}_s{seed}"
        s = self.p["student"]
        self.timed(f"adapt_{name}_s{seed}", d / "student.pt",
                   adapt("adapt", "--teacher", str(teacher), "--data", str(data), "--out", str(d), "--seed", str(seed),
                         "--epochs", str(s["epochs"]), "--batch", str(s["batch"]), "--lr", str(s["lr"]),
                         "--threads", self.threads, *flags))
        summary = json.loads((d / "report" / "summary.json").read_text())
        row = dict(summary["splits"]["test"]["student"])
        train = summary["splits"].get("train", {})
        if "teacher" in train:  # pseudo-label error (teacher on the adaptation pairs) and student train error
            row["pseudo_label_mean_m"] = train["teacher"].get("mean_m")
            row["student_train_mean_m"] = train["student"].get("mean_m")
        return row

    def run(self) -> Dict[str, Any]:
        p = self.p
        src_city = self.city("source", p["source"], p["city_seeds"]["source"])
        tgt_city = self.city("target", p["target"], p["city_seeds"]["target"])
        src = self.pairs("source", src_city, p["pairs"]["source"], 1)
        tgt = self.pairs("target", tgt_city, p["pairs"]["target"], 2)
        teacher = self.train("teacher", src, p["teacher"], 0)
        res: Dict[str, Any] = {"teacher_source": self.evaluate("teacher_source", teacher, src),
                               "teacher": self.evaluate("teacher", teacher, tgt)}
        oracle = self.train("oracle", tgt, p["oracle"], 0, init=str(teacher))
        res["oracle"] = self.evaluate("oracle", oracle, tgt)
        for v in p["variants"]:
            flags = VARIANT_FLAGS.get(v) or VARIANT_FLAGS["st_+M-OF"] + ["--entropy-min", str(p["entropy_min_weight"])]
            res[v] = [self.adapt(v, teacher, tgt, flags, s) for s in p["seeds"]]
        for k in p["sweeps"].get("levels", []):
            res[f"levels={k}"] = [self.adapt(f"levels{k}", teacher, tgt, VARIANT_FLAGS["st_+M+OF"] + ["--levels", str(k)], s)
                                  for s in p["seeds"]]
        for t in p["sweeps"].get("keep", []):
            res[f"keep={t}"] = [self.adapt(f"keep{t}", teacher, tgt, ["--pseudo-gt", "mode", "--keep", str(t)], s)
                                for s in p["seeds"]]
        for a in p["sweeps"].get("gap_amounts", []):
            gap_city = self.city(f"gap{a}", dict(p["target"], amount=a), p["city_seeds"]["target"])
            gap = self.pairs(f"gap{a}", gap_city, p["pairs"]["target"], 2)
            res[f"gap={a}"] = {"teacher": self.evaluate(f"teacher_gap{a}", teacher, gap),
                               "st_+M+OF": [self.adapt(f"gap{a}", teacher, gap, VARIANT_FLAGS["st_+M+OF"], s)
                                            for s in p["seeds"]]}
        return res


def _stat(rows: Any, key: str) -> str:
    vals = [r[key] for r in (rows if isinstance(rows, list) else [rows]) if r.get(key) is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"


def table(res: Dict[str, Any]) -> str:
    teacher = res["teacher"]["mean_m"]
    lines = ["| model (target test) | mean m | median m | vs teacher mean | pseudo-label mean m (train) | student train mean m |",
             "|---|---|---|---|---|---|",
             f"| Centre guess (coarse fix) | {res['teacher']['prior_mean_m']:.2f} | – | – | – | – |"]
    for key, rows in res.items():
        if key in ("teacher_source",) or key.startswith("gap="):
            continue
        rows_l = rows if isinstance(rows, list) else [rows]
        mean = statistics.mean(r["mean_m"] for r in rows_l)
        lines.append(f"| {LABELS.get(key, key)} | {_stat(rows, 'mean_m')} | {_stat(rows, 'median_m')} | "
                     f"{100 * (mean - teacher) / teacher:+.1f} % | {_stat(rows, 'pseudo_label_mean_m')} | "
                     f"{_stat(rows, 'student_train_mean_m')} |")
    for key, g in res.items():
        if key.startswith("gap="):
            lines.append(f"| gap {key[4:]}: Teacher / Student +M +OF | {g['teacher']['mean_m']:.2f} / "
                         f"{_stat(g['st_+M+OF'], 'mean_m')} | {g['teacher']['median_m']:.2f} / "
                         f"{_stat(g['st_+M+OF'], 'median_m')} | – | – | – |")
    lines.append(f"\nTeacher on its own source style (same-area test): mean {res['teacher_source']['mean_m']:.2f} m, "
                 f"median {res['teacher_source']['median_m']:.2f} m.")
    return "\n".join(lines)


def machine() -> str:
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    return f"{model}, {os.cpu_count()} cores, {platform.python_version()}, load average {os.getloadavg()[0]:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=HERE / "crossarea.yaml")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "crossarea")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per step (1 is fastest on a shared 2-core machine: OpenMP spin contention)")
    ap.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")], help="override the profile's adaptation seeds, e.g. 0,1,2")
    ap.add_argument("--variants", type=lambda t: t.split(","), help="override the profile's variants, e.g. st_+M-OF,st_+M+OF")
    ap.add_argument("--record", type=Path, help="append the table to this RESULTS.md")
    args = ap.parse_args()
    cfg = yaml.safe_load(args.config.read_text())
    for key in ("seeds", "variants"):
        if getattr(args, key):
            cfg["profiles"][args.profile][key] = getattr(args, key)
    out = args.out / args.profile
    bench = Bench(cfg, args.profile, out, args.threads)
    t0 = time.time()
    res = bench.run()
    (out / "results.json").write_text(json.dumps({"results": res, "timings_s": bench.timings}, indent=2))
    text = table(res)
    print(text)
    if args.record:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        with open(args.record, "a") as f:
            f.write(f"\n### Cross-area adaptation, profile `{args.profile}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
                    f"commit {commit})\nCommand: `python -m bench.crossarea --profile {args.profile} --record {args.record}`; "
                    f"config `bench/crossarea.yaml`; machine: {machine()}; wall time {time.time() - t0:.0f} s "
                    f"(steps: {json.dumps(bench.timings)}).\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
