# SPDX-License-Identifier: Apache-2.0
"""Localizer node latency over real DDS: image publish -> pose receive, and per stage.

The node runs as its own process (`xview-loc node --params-file`), exactly as on a vehicle; this
process publishes GNSS fixes and IMU headings at 10 Hz and JPEG panoramas at ``--rate`` Hz, moving
north at 2 m/s over the tile area, and times each pose's arrival against its image's publish time.
Per-stage medians/p95 (image decode, patch, preprocess, inference, heat-map decode, drive filter,
publish of pose and fix; then, on the node's visualization thread, visualize: overlay, grids, markers)
come from the node's /diagnostics. Gating is off: latency, not accuracy, is measured here. ``--busy N``
runs N busy-loop processes meanwhile (a loaded machine).

    .venv/bin/python bench/bench_node.py --tiles xyz:DIR --lat 52.0 --lon 4.36 [--model M.pt] [--record]

Without --tiles a synthetic city is made (xview_testbed.synth.make_city); without --model an
untrained `small` model (same cost as a trained one).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import results  # noqa: E402


def _prepare(args: argparse.Namespace, out: Path) -> tuple[str, str, float, float]:
    model = args.model
    if not model:
        import torch

        from xview_loc_ros.models import build_model, save_checkpoint

        torch.manual_seed(0)
        model = str(out / "small_untrained.pt")
        save_checkpoint(model, build_model("small"))
    tiles, lat, lon = args.tiles, args.lat, args.lon
    if not tiles:
        from xview_testbed.synth import make_city

        city = Path(make_city("suburb", 0, out / "city", lat=52.0116, lon=4.3571, size_m=600.0))
        meta = json.loads((city / "city.json").read_text())
        tiles, lat, lon = f"xyz:{city / 'tiles'}", float(meta["lat"]), float(meta["lon"])
    if lat is None or lon is None:
        raise SystemExit("--lat and --lon are required with --tiles")
    return model, tiles, lat, lon


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint / ONNX / engine (default: untrained small)")
    ap.add_argument("--tiles", help="tile source spec (default: a synthetic city)")
    ap.add_argument("--lat", type=float, help="start latitude (degrees) inside the tile area")
    ap.add_argument("--lon", type=float)
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="inference threads")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--rate", type=float, default=4.0, help="image rate (Hz)")
    ap.add_argument("--image-size", default="1024x512", help="published panorama WxH (JPEG)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "node"))
    ap.add_argument("--fusion", default="filter", choices=("filter", "frame"))
    ap.add_argument("--busy", type=int, default=0, help="busy-loop processes running meanwhile (load)")
    ap.add_argument(
        "--viz", choices=("on", "off"), default="on", help="RViz outputs (overlay, grids, markers) on or off"
    )
    ap.add_argument("--record", action="store_true", help="append the result to bench/RESULTS.md")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, tiles, lat0, lon0 = _prepare(args, out)

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CompressedImage, Imu, NavSatFix, NavSatStatus

    from xview_loc_ros.geo import LocalENU, compass_to_enu_yaw, quaternion_from_yaw
    from xview_loc_ros.params import LocalizerParams
    from xview_loc_ros.ros_msgs import sec_to_stamp, stamp_to_sec

    os.environ.setdefault("ROS_DOMAIN_ID", str(np.random.default_rng().integers(120, 200)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    params = (
        LocalizerParams(
            model_path=model,
            tile_source=tiles,
            backend=args.backend,
            device=args.device,
            threads=args.threads,
            gate_chi2=1e9,
            min_confidence=0.0,
            max_ambiguity=1e9,
            diagnostics_period_s=1.0,
            fusion=args.fusion,
            publish_overlay=args.viz == "on",
            publish_grid=args.viz == "on",
            publish_marker=args.viz == "on",
            publish_belief_grid=args.viz == "on",
        )
        .validate()
        .to_dict()
    )
    pfile = out / "params.yaml"
    pfile.write_text(yaml.safe_dump({"xview_localizer": {"ros__parameters": params}}))
    node_proc = subprocess.Popen(
        [sys.executable, "-m", "xview_testbed.cli", "node", "--params-file", str(pfile)],
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = threading.Event()
    log_lines: list[str] = []

    def watch() -> None:
        for line in node_proc.stderr:
            log_lines.append(line)
            if "ready:" in line:
                ready.set()

    threading.Thread(target=watch, daemon=True).start()

    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    rclpy.init()
    pub_node = rclpy.create_node("bench_node_player")
    sent: dict[float, float] = {}
    got: dict[float, float] = {}
    diag: list[dict] = []
    pub_node.create_subscription(
        PoseWithCovarianceStamped,
        "/xview_localizer/pose",
        lambda m: got.setdefault(round(stamp_to_sec(m.header.stamp), 6), time.monotonic()),
        10,
    )
    pub_node.create_subscription(
        DiagnosticArray, "/diagnostics", lambda m: diag.append({kv.key: kv.value for kv in m.status[0].values}), 10
    )
    p_fix = pub_node.create_publisher(NavSatFix, "/gnss/fix", 10)
    p_imu = pub_node.create_publisher(Imu, "/imu/data", 10)
    p_img = pub_node.create_publisher(CompressedImage, "/camera/image/compressed", 10)
    ex = SingleThreadedExecutor()
    ex.add_node(pub_node)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    try:
        if not ready.wait(120):
            raise SystemExit("node did not start:\n" + "".join(log_lines))
        while p_img.get_subscription_count() == 0:
            time.sleep(0.05)
        w, h = (int(x) for x in args.image_size.split("x"))
        rng = np.random.default_rng(0)
        jpegs = [
            cv2.imencode(".jpg", cv2.resize(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8), (w, h)))[
                1
            ].tobytes()
            for _ in range(4)
        ]
        enu = LocalENU(lat0, lon0)
        qx, qy, qz, qw = quaternion_from_yaw(float(compass_to_enu_yaw(0.0)))
        t_start = time.time()
        period = 1.0 / args.rate
        n_sent = 0
        tick = 0
        next_img = time.monotonic() + 0.5
        while n_sent < args.frames:
            now = time.time()
            lat, lon, _ = enu.to_latlon(0.0, 2.0 * (now - t_start) % 100.0, 0.0)
            fix = NavSatFix()
            fix.header.stamp = sec_to_stamp(now)
            fix.status.status = NavSatStatus.STATUS_FIX
            fix.latitude, fix.longitude, fix.altitude = float(lat), float(lon), 0.0
            fix.position_covariance = [25.0, 0, 0, 0, 25.0, 0, 0, 0, 100.0]
            fix.position_covariance_type = NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN
            p_fix.publish(fix)
            imu = Imu()
            imu.header.stamp = fix.header.stamp
            imu.orientation.x, imu.orientation.y, imu.orientation.z, imu.orientation.w = qx, qy, qz, qw
            p_imu.publish(imu)
            if time.monotonic() >= next_img:
                img = CompressedImage(format="jpeg", data=jpegs[tick % 4])
                img.header.stamp = fix.header.stamp
                key = round(stamp_to_sec(img.header.stamp), 6)
                sent[key] = time.monotonic()
                p_img.publish(img)
                n_sent += 1
                next_img += period
            tick += 1
            time.sleep(0.1)
        time.sleep(3.0)
        lat_ms = np.array([(got[k] - sent[k]) * 1e3 for k in sent if k in got])
        stages = diag[-1] if diag else {}
    finally:
        for b in busy:
            b.kill()
        node_proc.send_signal(2)
        try:
            node_proc.wait(15)
        except subprocess.TimeoutExpired:
            node_proc.kill()
        ex.shutdown()
        pub_node.destroy_node()
        rclpy.try_shutdown()

    if lat_ms.size == 0:
        raise SystemExit("no pose received:\n" + "".join(log_lines[-20:]))
    names = ["image", "patch", "preprocess", "inference", "decode", "filter", "publish", "visualize"]
    row = {
        k: (float(stages.get(f"stage_{k}_ms_median", "nan")), float(stages.get(f"stage_{k}_ms_p95", "nan")))
        for k in names
    }
    # the pose path: visualize runs after the pose is out (its own thread); filter only with fusion: filter
    non_inf = sum(row[k][0] for k in names if k not in ("inference", "visualize") and np.isfinite(row[k][0]))
    result = {
        "frames_sent": len(sent),
        "poses": int(lat_ms.size),
        "frames_dropped": stages.get("frames_dropped"),
        "viz": {k: stages.get(k) for k in ("viz_published", "viz_skipped_rate", "viz_dropped_busy")},
        "busy_processes": args.busy,
        "e2e_ms_median": float(np.median(lat_ms)),
        "e2e_ms_p95": float(np.percentile(lat_ms, 95)),
        "stages_ms": row,
        "non_inference_over_inference": non_inf / row["inference"][0],
        "backend": stages.get("backend"),
        "cpu": results.cpu_model(),
        "rate_hz": args.rate,
        "image": args.image_size,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print("\n| stage | median ms | p95 ms |\n| --- | --- | --- |")
    for k in names:
        print(f"| {k} | {row[k][0]:.2f} | {row[k][1]:.2f} |")
    print(
        f"| end to end (image publish -> pose receive) | {result['e2e_ms_median']:.1f} | {result['e2e_ms_p95']:.1f} |"
    )
    print(
        f"pose path but inference: {non_inf:.2f} ms = {100 * result['non_inference_over_inference']:.1f} % of inference"
    )
    if args.record:
        cmd = "bench/bench_node.py " + " ".join(sys.argv[1:])
        lines = [
            f"Backend: {result['backend']}; {args.image_size} JPEG at {args.rate} Hz, "
            f"{result['poses']}/{result['frames_sent']} poses, {result['frames_dropped']} frames dropped.\n",
            "| stage | median ms | p95 ms |",
            "| --- | --- | --- |",
        ]
        lines += [f"| {k} | {row[k][0]:.2f} | {row[k][1]:.2f} |" for k in names]
        lines += [
            f"| **end to end (DDS image publish -> pose receive)** | {result['e2e_ms_median']:.1f} | {result['e2e_ms_p95']:.1f} |",
            "",
            f"Everything on the pose's path but inference (median sum): {non_inf:.1f} ms = {100 * result['non_inference_over_inference']:.0f} % of inference.",
        ]
        results.record(
            "## Localizer node (issue 8)",
            "\n".join(lines),
            command=cmd,
            append=True,
            subsection=f"### {results.now_utc()}: `{cmd}`",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
