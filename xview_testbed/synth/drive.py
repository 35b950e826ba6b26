# SPDX-License-Identifier: Apache-2.0
"""Drives through a synthetic city, recorded as a real rosbag2 (MCAP or SQLite 3) with standard messages.

Topics (all stamped with the camera exposure time of each frame, strictly increasing):

* ``/gnss/fix`` sensor_msgs/NavSatFix, frame ``gnss``: noisy fix (see :mod:`.gnss`), status FIX set
  explicitly, ENU position covariance (m^2), type APPROXIMATED.
* ``/imu/data`` sensor_msgs/Imu, frame ``imu``: orientation in ENU (REP-103/145) with heading noise,
  yaw rate, body accelerations.
* ``/odom`` nav_msgs/Odometry, frame ``odom``, child ``base_link``: wheel odometry at the IMU rate,
  twist in the child frame (forward speed, yaw rate) with a scale error drawn per drive (std
  :data:`ODOM_SCALE_STD`, 1 %), a Gauss-Markov yaw-rate bias (std :data:`ODOM_YAW_RATE_BIAS_DEG_S`,
  correlation :data:`ODOM_YAW_RATE_BIAS_TAU_S`) and white noise; the pose is that twist dead-reckoned
  from the origin of ``odom``. Drawn from its own random stream: the other topics of a seed are the same
  as before odometry was recorded.
* ``/camera/image/compressed`` sensor_msgs/CompressedImage (JPEG), or ``/camera/image`` Image rgb8 with
  ``raw``; frame ``camera`` (panorama) or ``camera_optical`` (pinhole).
* ``/camera/camera_info`` sensor_msgs/CameraInfo (pinhole only).
* ``/ground_truth/fix`` NavSatFix and ``/ground_truth/pose`` geometry_msgs/PoseStamped in ``map``
  (ENU at the city datum of city.json): the true camera position and heading.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from xview_loc_ros.geo import compass_to_enu_yaw, quaternion_from_yaw
from xview_testbed.synth.citydir import City, load_city
from xview_testbed.synth.gnss import GnssErrorModel, gauss_markov
from xview_testbed.synth.ground import GroundCamera, GroundRenderer
from xview_testbed.synth.pairs import ground_camera
from xview_testbed.synth.world import Road

TOPICS = {
    "fix": ("/gnss/fix", "sensor_msgs/msg/NavSatFix"),
    "imu": ("/imu/data", "sensor_msgs/msg/Imu"),
    "odom": ("/odom", "nav_msgs/msg/Odometry"),
    "jpeg": ("/camera/image/compressed", "sensor_msgs/msg/CompressedImage"),
    "raw": ("/camera/image", "sensor_msgs/msg/Image"),
    "info": ("/camera/camera_info", "sensor_msgs/msg/CameraInfo"),
    "gt_fix": ("/ground_truth/fix", "sensor_msgs/msg/NavSatFix"),
    "gt_pose": ("/ground_truth/pose", "geometry_msgs/msg/PoseStamped"),
}
START_STAMP_NS = 1_750_000_000 * 10**9
# Wheel odometry errors: tyre radius / load (scale, per drive), wheel-speed differences and a drifting
# gyro (yaw-rate bias), encoder quantisation (white noise).
ODOM_SCALE_STD = 0.01
ODOM_YAW_RATE_BIAS_DEG_S = 0.2
ODOM_YAW_RATE_BIAS_TAU_S = 60.0
ODOM_YAW_RATE_NOISE_DEG_S = 0.5
ODOM_SPEED_NOISE_MPS = 0.05
ODOM_SEED_SALT = 0x0D0


# ---------------------------------------------------------------------------------------------
# Route
# ---------------------------------------------------------------------------------------------
def _key(p: np.ndarray) -> Tuple[float, float]:
    return (round(float(p[0]), 2), round(float(p[1]), 2))


Region = Tuple[float, float, float, float]  # west, south, east, north: metres east/north of the city centre


def plan_route(
    roads: List[Road], length_m: float, rng: np.random.Generator, region: Region
) -> Tuple[np.ndarray, np.ndarray]:
    """A random walk along the road graph, ``length_m`` long, on roads whose ends lie inside ``region``
    (U-turn at dead ends and at the region's edge). Returns centreline points every 0.5 m (M, 2) and the
    road width at each."""
    west, south, east, north = region
    ends: Dict[Tuple[float, float], List[Tuple[int, bool]]] = {}
    for i, r in enumerate(roads):
        ends.setdefault(_key(r.points[0]), []).append((i, False))
        ends.setdefault(_key(r.points[-1]), []).append((i, True))

    def inside(p):
        return west < p[0] < east and south < p[1] < north

    candidates = [i for i, r in enumerate(roads) if inside(r.points[0]) and inside(r.points[-1])]
    if not candidates:
        raise ValueError(f"no road lies inside the region {region} (metres W, S, E, N of the city centre) to drive on")
    i = candidates[rng.integers(len(candidates))]
    rev = bool(rng.random() < 0.5)
    pts_list, widths, total = [], [], 0.0
    while total < length_m:
        pts = roads[i].points[::-1] if rev else roads[i].points
        pts_list.append(pts)
        widths.append(np.full(len(pts), roads[i].width_m))
        total += float(np.hypot(*np.diff(pts, axis=0).T).sum())
        options = [(j, r) for j, r in ends.get(_key(pts[-1]), []) if j != i]
        options = [(j, r) for j, r in options if inside(roads[j].points[0 if r else -1])]
        if options:
            i, rev = options[rng.integers(len(options))]
        else:
            rev = not rev  # dead end or city edge: turn around
    pts = np.concatenate(pts_list)
    w = np.concatenate(widths)
    seg = np.hypot(*np.diff(pts, axis=0).T)
    s = np.concatenate([[0], np.cumsum(seg)])
    q = np.arange(0, s[-1], 0.5)
    return np.stack([np.interp(q, s, pts[:, 0]), np.interp(q, s, pts[:, 1])], -1), np.interp(q, s, w)


def vehicle_track(
    route: np.ndarray, widths: np.ndarray, speed_mps: float, rate_hz: float, frames: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Positions (frames, 2) ENU metres and compass headings (frames,) degrees of a vehicle driving the
    right-hand lane of ``route`` (0.5 m spacing) at ``speed_mps``, sampled at ``rate_hz``."""
    k = 9  # smooth corners over about 4 m
    kernel = np.ones(k) / k
    pad = np.pad(route, ((k // 2, k // 2), (0, 0)), mode="edge")
    smooth = np.stack([np.convolve(pad[:, 0], kernel, "valid"), np.convolve(pad[:, 1], kernel, "valid")], -1)
    tan = np.gradient(smooth, axis=0)
    tan /= np.maximum(np.hypot(tan[:, 0], tan[:, 1]), 1e-9)[:, None]
    right = np.stack([tan[:, 1], -tan[:, 0]], -1)
    lane = np.where(widths >= 7.0, np.minimum(widths / 4, widths / 2 - 2.8), 0.0)
    lane = np.convolve(np.pad(lane, (k // 2, k // 2), mode="edge"), kernel, "valid")
    path = smooth + right * lane[:, None]
    s = np.arange(frames) * speed_mps / rate_hz / 0.5
    if s[-1] > len(path) - 1:
        raise ValueError("route shorter than the drive")
    i0 = np.floor(s).astype(int)
    f = (s - i0)[:, None]
    i1 = np.minimum(i0 + 1, len(path) - 1)
    pos = path[i0] * (1 - f) + path[i1] * f
    t = tan[i0] * (1 - f) + tan[i1] * f
    heading = np.degrees(np.arctan2(t[:, 0], t[:, 1])) % 360.0
    return pos, heading


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------
class _Msgs:
    def __init__(self, typestore) -> None:
        self.ts = typestore
        self.T = typestore.types

    def header(self, stamp_ns: int, frame: str):
        return self.T["std_msgs/msg/Header"](
            stamp=self.T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame
        )

    def fix(self, stamp_ns: int, frame: str, lat: float, lon: float, alt: float, var_m2: float, cov_type: int):
        S = self.T["sensor_msgs/msg/NavSatStatus"]
        cov = np.diag([var_m2, var_m2, 4 * var_m2]).ravel().astype(np.float64)
        return self.T["sensor_msgs/msg/NavSatFix"](
            header=self.header(stamp_ns, frame),
            status=S(status=S.STATUS_FIX, service=S.SERVICE_GPS),
            latitude=float(lat),
            longitude=float(lon),
            altitude=float(alt),
            position_covariance=cov,
            position_covariance_type=cov_type,
        )

    def imu(self, stamp_ns: int, yaw: float, yaw_var: float, yaw_rate: float, acc: Tuple[float, float, float]):
        q = quaternion_from_yaw(yaw)
        return self.T["sensor_msgs/msg/Imu"](
            header=self.header(stamp_ns, "imu"),
            orientation=self.T["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
            orientation_covariance=np.diag([1e-4, 1e-4, yaw_var]).ravel().astype(np.float64),
            angular_velocity=self.T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=float(yaw_rate)),
            angular_velocity_covariance=np.diag([1e-4] * 3).ravel().astype(np.float64),
            linear_acceleration=self.T["geometry_msgs/msg/Vector3"](x=float(acc[0]), y=float(acc[1]), z=float(acc[2])),
            linear_acceleration_covariance=np.diag([1e-2] * 3).ravel().astype(np.float64),
        )

    def odom(self, stamp_ns: int, x: float, y: float, yaw: float, speed: float, yaw_rate: float):
        """Odometry in ``odom`` (pose dead-reckoned) with the twist in ``base_link`` (x forward, z up)."""
        q = quaternion_from_yaw(yaw)
        V = self.T["geometry_msgs/msg/Vector3"]
        pose_cov = np.diag([0.1, 0.1, 1e6, 1e6, 1e6, 0.01]).ravel().astype(np.float64)
        twist_cov = np.diag(
            [ODOM_SPEED_NOISE_MPS**2, 1e-4, 1e6, 1e6, 1e6, math.radians(ODOM_YAW_RATE_NOISE_DEG_S) ** 2]
        ).ravel()
        return self.T["nav_msgs/msg/Odometry"](
            header=self.header(stamp_ns, "odom"),
            child_frame_id="base_link",
            pose=self.T["geometry_msgs/msg/PoseWithCovariance"](
                pose=self.T["geometry_msgs/msg/Pose"](
                    position=self.T["geometry_msgs/msg/Point"](x=float(x), y=float(y), z=0.0),
                    orientation=self.T["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
                ),
                covariance=pose_cov,
            ),
            twist=self.T["geometry_msgs/msg/TwistWithCovariance"](
                twist=self.T["geometry_msgs/msg/Twist"](
                    linear=V(x=float(speed), y=0.0, z=0.0), angular=V(x=0.0, y=0.0, z=float(yaw_rate))
                ),
                covariance=twist_cov.astype(np.float64),
            ),
        )

    def jpeg(self, stamp_ns: int, frame: str, rgb: np.ndarray, quality: int):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise OSError("JPEG encoding failed")
        return self.T["sensor_msgs/msg/CompressedImage"](
            header=self.header(stamp_ns, frame), format="jpeg", data=buf.ravel()
        )

    def raw(self, stamp_ns: int, frame: str, rgb: np.ndarray):
        h, w = rgb.shape[:2]
        return self.T["sensor_msgs/msg/Image"](
            header=self.header(stamp_ns, frame),
            height=h,
            width=w,
            encoding="rgb8",
            is_bigendian=0,
            step=w * 3,
            data=np.ascontiguousarray(rgb).ravel(),
        )

    def info(self, stamp_ns: int, cam: GroundCamera):
        fx, fy, cx, cy = cam.intrinsics()
        h, w = cam.size
        k = np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], np.float64)
        p = np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0], np.float64)
        return self.T["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp_ns, "camera_optical"),
            height=h,
            width=w,
            distortion_model="plumb_bob",
            d=np.zeros(5, np.float64),
            k=k,
            r=np.eye(3).ravel(),
            p=p,
            binning_x=0,
            binning_y=0,
            roi=self.T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
        )

    def pose(self, stamp_ns: int, e: float, n: float, z: float, yaw: float):
        q = quaternion_from_yaw(yaw)
        P = self.T["geometry_msgs/msg/Pose"]
        return self.T["geometry_msgs/msg/PoseStamped"](
            header=self.header(stamp_ns, "map"),
            pose=P(
                position=self.T["geometry_msgs/msg/Point"](x=float(e), y=float(n), z=float(z)),
                orientation=self.T["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
            ),
        )


def wheel_odometry(speed_mps: float, yaw_rate: np.ndarray, dt: float, rng: np.random.Generator) -> np.ndarray:
    """(n, 5) odometry samples every ``dt`` s for a vehicle at ``speed_mps`` turning at ``yaw_rate``
    (rad/s, ENU): dead-reckoned x, y (m) and yaw (rad) in ``odom``, measured forward speed (m/s) and yaw
    rate (rad/s), with the errors of the module docstring."""
    n = len(yaw_rate)
    scale = 1.0 + rng.normal(0.0, ODOM_SCALE_STD)
    bias = gauss_markov(n, dt, math.radians(ODOM_YAW_RATE_BIAS_DEG_S), ODOM_YAW_RATE_BIAS_TAU_S, rng)[:, 0]
    w = yaw_rate + bias + rng.normal(0.0, math.radians(ODOM_YAW_RATE_NOISE_DEG_S), n)
    v = speed_mps * scale + rng.normal(0.0, ODOM_SPEED_NOISE_MPS, n)
    out = np.zeros((n, 5))
    x = y = yaw = 0.0
    for k in range(n):
        out[k] = (x, y, yaw, v[k], w[k])
        x += v[k] * dt * math.cos(yaw + 0.5 * w[k] * dt)
        y += v[k] * dt * math.sin(yaw + 0.5 * w[k] * dt)
        yaw += w[k] * dt
    return out


def make_drive(
    city_dir: str | os.PathLike,
    out_bag: str | os.PathLike,
    storage: str = "mcap",
    frames: int = 100,
    seed: int = 0,
    rate_hz: float = 10.0,
    raw: bool = False,
    ground: str = "panorama",
    preset: str = "small",
    speed_mps: Optional[float] = None,
    jpeg_quality: int = 90,
    overwrite: bool = False,
    gnss: Optional[Dict[str, float]] = None,
    progress: bool = False,
    region: Optional[Region] = None,
    gnss_jump: Optional[Tuple[float, float, float, float]] = None,
) -> Path:
    """Drive ``frames`` camera frames at ``rate_hz`` through the city and write a rosbag2 at ``out_bag``.

    ``gnss`` overrides the style's GNSS/heading error settings (keys of :class:`GnssErrorModel`).
    ``region`` (west, south, east, north; metres from the city centre) confines the route to the roads
    inside that rectangle, so that drives can cover one district and tests another; default: the city
    less 30 m at each edge. ``gnss_jump`` (east m, north m, t0 s, t1 s) adds a constant offset to every fix
    stamped in [t0, t1) seconds after the first frame: a controlled fault (multipath, tunnel exit) for
    recovery tests; the ground truth is unchanged.
    The bag is written under a temporary name and renamed into place. Returns the bag path.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    if storage not in ("mcap", "sqlite3"):
        raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
    if int(frames) < 1 or not rate_hz > 0:
        raise ValueError(f"frames must be >= 1 and rate > 0 Hz, got {frames!r}, {rate_hz!r}")
    out = Path(out_bag)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (use --overwrite to replace it)")
    city: City = load_city(city_dir)
    sensor = city.style["sensor"]
    speed = float(speed_mps if speed_mps is not None else sensor["speed_mps"])
    if not speed > 0:
        raise ValueError(f"speed must be > 0 m/s, got {speed!r}")
    cam = ground_camera(preset, ground)
    model = GnssErrorModel.from_sensor(sensor, **(gnss or {}))
    rng = np.random.default_rng(seed)
    frames = int(frames)
    dt = 1.0 / rate_hz
    inner = city.size_m / 2 - 30.0
    if region is None:
        region = (-inner, -inner, inner, inner)
    w, s_, e, n = (float(x) for x in region)
    if not (-inner <= w < e <= inner and -inner <= s_ < n <= inner):
        raise ValueError(
            f"region {region}: needs west < east and south < north within +-{inner:g} m of the city centre "
            "(the city less 30 m at each edge)"
        )
    route, widths = plan_route(city.roads, frames * speed * dt + 50.0, rng, (w, s_, e, n))
    pos, heading = vehicle_track(route, widths, speed, rate_hz, frames)
    err, _ = model.position_errors(frames, dt, rng)
    herr = model.heading_errors(frames, dt, rng)
    if gnss_jump is not None:
        je, jn, t0, t1 = (float(x) for x in gnss_jump)
        if not t0 < t1:
            raise ValueError(f"gnss_jump {gnss_jump}: needs t0 < t1 (seconds after the first frame)")
        t = np.arange(frames) * dt
        err = err + np.where(((t >= t0) & (t < t1))[:, None], [je, jn], 0.0)
    frame = city.frame
    z_cam = float(sensor["camera_height_m"])
    gt_lat, gt_lon, _ = frame.to_latlon(pos[:, 0], pos[:, 1], z_cam)
    fx_lat, fx_lon, _ = frame.to_latlon(pos[:, 0] + err[:, 0], pos[:, 1] + err[:, 1], z_cam)
    yaw_true = compass_to_enu_yaw(heading)
    yaw_meas = compass_to_enu_yaw(heading + herr)
    yaw_rate = np.gradient(np.unwrap(yaw_true), dt) if frames > 1 else np.zeros(1)
    odo = wheel_odometry(speed, yaw_rate, dt, np.random.default_rng([seed, ODOM_SEED_SALT]))
    renderer = GroundRenderer(city.world, city.style["appearance"])
    cam_frame = "camera" if cam.kind == "panorama" else "camera_optical"
    ts = get_typestore(Stores.ROS2_JAZZY)
    m = _Msgs(ts)
    staging = out.with_name(f".{out.name}.partial")  # the bag keeps its final name inside (file names in metadata.yaml)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    tmp = staging / out.name
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    iterator = range(frames)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="drive", unit="frame")
    with Writer(tmp, version=9, storage_plugin=plugin) as writer:
        conns = {
            k: writer.add_connection(t, typ, typestore=ts)
            for k, (t, typ) in TOPICS.items()
            if (k != "info" or cam.kind == "pinhole") and k != ("jpeg" if raw else "raw")
        }
        for k in iterator:
            stamp = START_STAMP_NS + int(round(k * dt * 1e9))
            img = renderer.render(pos[k, 0], pos[k, 1], heading[k], cam, z_cam, rng=np.random.default_rng([seed, k]))
            msgs = [
                (
                    "imu",
                    m.imu(
                        stamp,
                        float(yaw_meas[k]),
                        math.radians(max(model.heading_noise_deg, 0.1)) ** 2
                        + math.radians(model.heading_bias_deg) ** 2,
                        float(yaw_rate[k]),
                        (0.0, speed * float(yaw_rate[k]), 9.80665),
                    ),
                ),
                ("odom", m.odom(stamp, *(float(v) for v in odo[k]))),
                ("fix", m.fix(stamp, "gnss", fx_lat[k], fx_lon[k], z_cam, max(model.sigma_m, 0.01) ** 2, 1)),
                ("raw", m.raw(stamp, cam_frame, img)) if raw else ("jpeg", m.jpeg(stamp, cam_frame, img, jpeg_quality)),
                ("gt_fix", m.fix(stamp, "gnss", gt_lat[k], gt_lon[k], z_cam, 1e-4, 2)),
                ("gt_pose", m.pose(stamp, pos[k, 0], pos[k, 1], z_cam, float(yaw_true[k]))),
            ]
            if cam.kind == "pinhole":
                msgs.insert(2, ("info", m.info(stamp, cam)))
            for key, msg in msgs:
                writer.write(conns[key], stamp, ts.serialize_cdr(msg, TOPICS[key][1]))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    staging.rmdir()
    return out
