# SPDX-License-Identifier: Apache-2.0
"""Parameters of the localizer node: names, defaults (mirrored by config/localizer.yaml), validation.

ROS-free: the node declares every field of :class:`LocalizerParams` as a ROS parameter with the
field's default, reads them back into a :class:`LocalizerParams` and calls :meth:`validate`, which
raises :class:`ParameterError` naming the parameter. Units are in the field names or comments:
seconds (``_s``), metres (``_m``), degrees (``_deg``, compass: clockwise from north), pixels (``_px``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, Mapping, Optional, Tuple

from xview_loc_ros.drive_filter import FilterParams
from xview_loc_ros.relocalize import RelocParams
from xview_loc_ros.sensors import DEFAULT_MAX_IMAGE_PIXELS

NODE_NAME = "xview_localizer"
INT_MAX = 2**31 - 1  # upper bound of the integer parameters' documented ranges

HEADING_SOURCES = ("imu", "fixed", "none")
IMAGE_TRANSPORTS = ("compressed", "raw")
FUSIONS = ("filter", "frame")
PATCH_CENTRES = ("belief", "fix")
RELOC_RANKS = ("confidence", "similarity")
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")


class ParameterError(ValueError):
    """An invalid node parameter; the message starts with the parameter's name."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"parameter '{name}': {problem}")
        self.name = name


@dataclass(frozen=True)
class ParamInfo:
    """What ``ros2 param describe`` shows for a parameter: ``description`` (the units are in ``unit``),
    the documented range [``lo``, ``hi``] (None = no range; validate() may be stricter, e.g. > 0), and
    ``runtime``: True when the running node applies a change (``ros2 param set``), False when a change
    needs a restart (declared read-only)."""

    description: str
    unit: str = ""
    lo: Optional[float] = None
    hi: Optional[float] = None
    runtime: bool = False

    @property
    def range(self) -> Optional[Tuple[float, float]]:
        return None if self.lo is None or self.hi is None else (self.lo, self.hi)


def _param(
    default: Any,
    description: str,
    unit: str = "",
    lo: Optional[float] = None,
    hi: Optional[float] = None,
    runtime: bool = False,
) -> Any:
    """A LocalizerParams field: its default and its :class:`ParamInfo` (in the field's metadata)."""
    return field(default=default, metadata={"info": ParamInfo(description, unit, lo, hi, runtime)})


def param_info(name: str) -> ParamInfo:
    """The :class:`ParamInfo` of LocalizerParams field ``name`` (KeyError for an unknown name)."""
    for f in fields(LocalizerParams):
        if f.name == name:
            return f.metadata["info"]
    raise KeyError(name)


def runtime_parameters() -> Tuple[str, ...]:
    """Names of the parameters the running node applies when set (the others are read-only)."""
    return tuple(f.name for f in fields(LocalizerParams) if f.metadata["info"].runtime)


@dataclass
class LocalizerParams:
    # --- model and inference
    model_path: str = _param("", "checkpoint (.pt), ONNX (.onnx) or TensorRT engine; required")
    backend: str = _param("auto", "auto | torch | onnxruntime | tensorrt")
    device: str = _param("", '"" = backend default (cuda if available), else e.g. "cpu", "cuda:0"')
    fp16: bool = _param(False, "half-precision inference (CUDA / TensorRT backends)")
    threads: int = _param(0, "CPU inference threads; 0 = library default", unit="threads", lo=0, hi=INT_MAX)
    # --- aerial tiles and patch
    tile_source: str = _param(
        "", "xyz:DIR, tms:DIR, mbtiles:FILE, pmtiles:FILE, geotiff:FILE, http(s)://.../{z}/{x}/{y}.png; required"
    )
    tile_cache_dir: str = _param("", 'disk cache for HTTP tiles; "" = none')
    tile_zoom: int = _param(-1, "-1 = finest zoom at least as fine as the patch m/px", unit="zoom level", lo=-1, hi=24)
    patch_size_px: int = _param(0, "0 = the model's aerial size; otherwise must equal it", unit="px", lo=0, hi=INT_MAX)
    patch_mpp: float = _param(
        0.0, "metres per pixel; 0 = the model's; otherwise must equal it", unit="m/px", lo=0.0, hi=math.inf
    )
    max_missing_fraction: float = _param(
        0.2, "reject a frame whose patch lacks more than this fraction of tiles", lo=0.0, hi=1.0, runtime=True
    )
    prefetch_ahead_s: float = _param(
        3.0,
        "prefetch patches this far ahead along the fix motion; 0 = off",
        unit="s",
        lo=0.0,
        hi=math.inf,
        runtime=True,
    )
    # --- input topics (relative names resolve in the node's namespace; remap freely)
    fix_topic: str = _param("gnss/fix", "sensor_msgs/NavSatFix input")
    image_transport: str = _param("compressed", "compressed: compressed_image_topic is subscribed | raw: image_topic")
    image_topic: str = _param("camera/image", "sensor_msgs/Image, subscribed when image_transport = raw")
    compressed_image_topic: str = _param(
        "camera/image/compressed",
        "sensor_msgs/CompressedImage (JPEG, PNG), subscribed when image_transport = compressed",
    )
    imu_topic: str = _param("imu/data", "orientation in ENU (REP-145)")
    camera_info_topic: str = _param(
        "camera/camera_info", '"" = not subscribed; checks a pinhole model\'s field of view'
    )
    max_image_pixels: int = _param(
        DEFAULT_MAX_IMAGE_PIXELS,
        "camera frames declaring more pixels are dropped before decoding",
        unit="px",
        lo=1,
        hi=INT_MAX,
        runtime=True,
    )
    # --- fix interpolation at the image stamp
    fix_max_age_s: float = _param(
        1.0, "newest fix older than the image by more than this -> reject", unit="s", lo=0.0, hi=math.inf
    )
    fix_max_gap_s: float = _param(
        2.0, "the two fixes around the image stamp further apart than this -> reject", unit="s", lo=0.0, hi=math.inf
    )
    fix_default_std_m: float = _param(
        10.0, "GNSS std when the fix's covariance type is UNKNOWN", unit="m", lo=0.0, hi=math.inf, runtime=True
    )
    # --- heading
    heading_source: str = _param("imu", "imu | fixed | none (unknown-orientation models only)")
    fixed_heading_deg: float = _param(
        0.0, "compass degrees, used when heading_source = fixed", unit="deg", lo=-360.0, hi=360.0, runtime=True
    )
    heading_std_deg: float = _param(
        5.0,
        "heading std when the source gives none (fixed, or IMU covariance unknown)",
        unit="deg",
        lo=0.0,
        hi=math.inf,
        runtime=True,
    )
    imu_max_age_s: float = _param(
        0.5, "the nearest IMU sample further than this from the image stamp -> reject", unit="s", lo=0.0, hi=math.inf
    )
    # --- frames and datum
    map_frame: str = _param("map", "local ENU frame at the datum (REP-105)")
    datum_from_first_fix: bool = _param(True, "anchor `map` at the first good fix; False = datum_lat/lon/alt")
    datum_lat: float = _param(0.0, "degrees WGS84", unit="deg", lo=-90.0, hi=90.0)
    datum_lon: float = _param(0.0, "degrees WGS84", unit="deg", lo=-180.0, hi=180.0)
    datum_alt: float = _param(0.0, "metres above the ellipsoid", unit="m")
    fix_frame_id: str = _param("", 'frame_id of ~/fix; "" = copy the input fix\'s frame (the antenna)', runtime=True)
    base_frame: str = _param(
        "base_link",
        "the vehicle frame (REP-105) whose pose ~/pose and whose position ~/fix give; the camera's mount "
        "is looked up from it on /tf_static",
    )
    camera_frame: str = _param("", 'the camera frame for the /tf_static lookup; "" = the images\' header frame_id')
    camera_lever_arm_m: Tuple[float, float, float] = _param(
        (0.0, 0.0, 0.0),
        "camera position in base_frame: x forward, y left, z up (z is ignored); used until /tf_static "
        "gives base_frame -> camera_frame",
        unit="m",
        runtime=True,
    )
    camera_yaw_offset_deg: float = _param(
        0.0,
        "camera forward (panorama centre column, optical axis) vs base_frame x, counter-clockwise; used "
        "until /tf_static gives base_frame -> camera_frame",
        unit="deg",
        lo=-360.0,
        hi=360.0,
        runtime=True,
    )
    imu_yaw_offset_deg: float = _param(
        0.0,
        "added to the IMU's ENU yaw (counter-clockwise): minus the magnetic declination (east positive) "
        "for an IMU referenced to magnetic north, plus any yaw of the IMU relative to base_frame",
        unit="deg",
        lo=-360.0,
        hi=360.0,
        runtime=True,
    )
    images_rectified: bool = _param(
        False,
        "pinhole models: the images are rectified, CameraInfo distortion is ignored; false: frames of a "
        "camera with non-zero distortion coefficients are refused (camera_distorted)",
        runtime=True,
    )
    # --- gating
    gate_chi2: float = _param(
        13.8,
        "Mahalanobis d^2 of (estimate - fix) vs the summed covariances; 13.8 = chi2(2 dof) 99.9 %",
        lo=0.0,
        hi=math.inf,
        runtime=True,
    )
    min_confidence: float = _param(0.05, "heat-map confidence below this -> reject", lo=0.0, hi=1.0, runtime=True)
    max_ambiguity: float = _param(
        0.8, "second-mode mass / chosen-mode mass above this -> reject", lo=0.0, hi=math.inf, runtime=True
    )
    min_std_m: float = _param(0.25, "floor on the published position std", unit="m", lo=0.0, hi=math.inf, runtime=True)
    unobserved_variance: float = _param(
        1.0e6,
        "variance published for z, roll, pitch (m^2, rad^2)",
        unit="m^2, rad^2",
        lo=0.0,
        hi=math.inf,
        runtime=True,
    )
    # --- fusion over the drive (xview_loc_ros.drive_filter; positions in map_frame, ENU metres)
    fusion: str = _param("filter", "filter: ~/pose is the drive filter's belief | frame: each frame alone, gated")
    patch_centre: str = _param(
        "belief",
        "where the aerial patch is cut with fusion: filter: belief = the filter's predicted position while it tracks "
        "with a std under patch_centre_max_std_m (a GNSS jump or bias then leaves the patch where the vehicle is), "
        "else the fix | fix = always the fix",
        runtime=True,
    )
    patch_centre_max_std_m: float = _param(
        8.0,
        "the belief's largest std (m) up to which it centres the patch",
        unit="m",
        lo=0.0,
        hi=math.inf,
        runtime=True,
    )
    odom_topic: str = _param("odom", 'nav_msgs/Odometry (twist in the child frame); "" = not subscribed')
    odom_max_age_s: float = _param(
        0.5, "an odometry sample holds this long; longer gaps fall back to fix speed", unit="s", lo=0.0, hi=math.inf
    )
    filter_cell_m: float = _param(0.5, "belief grid cell side", unit="m", lo=0.0, hi=math.inf)
    filter_window_m: float = _param(
        96.0, "belief grid side (re-centres on the belief by whole cells)", unit="m", lo=0.0, hi=math.inf
    )
    filter_odom_noise_m_per_sqrt_m: float = _param(
        0.15,
        "position std added per sqrt(metre) driven, odometry + IMU heading",
        unit="m/sqrt(m)",
        lo=0.0,
        hi=math.inf,
        runtime=True,
    )
    filter_fix_speed_noise_m_per_sqrt_m: float = _param(
        0.4, "... when the speed comes from successive fixes", unit="m/sqrt(m)", lo=0.0, hi=math.inf, runtime=True
    )
    filter_fix_velocity_noise_m_per_sqrt_m: float = _param(
        0.8, "... fix velocity vector (no heading)", unit="m/sqrt(m)", lo=0.0, hi=math.inf, runtime=True
    )
    filter_time_noise_m_per_sqrt_s: float = _param(
        0.3,
        "position std added per sqrt(second) with any motion source",
        unit="m/sqrt(s)",
        lo=0.0,
        hi=math.inf,
        runtime=True,
    )
    filter_no_motion_noise_m_per_sqrt_s: float = _param(
        3.0, "... when no motion source is available", unit="m/sqrt(s)", lo=0.0, hi=math.inf, runtime=True
    )
    filter_gnss_outlier_weight: float = _param(
        0.05, "weight of the flat part of the GNSS likelihood (multipath)", lo=0.0, hi=1.0, runtime=True
    )
    filter_gnss_correlation_s: float = _param(
        5.0,
        "GNSS error correlation time: fix covariance x max(1, this / dt)",
        unit="s",
        lo=0.0,
        hi=math.inf,
        runtime=True,
    )
    heatmap_temperature: float = _param(
        2.5,
        "exponent on the heat map's probabilities (bench/calibrate_temperature.py); 0 = heat maps ignored (ablation)",
        lo=0.0,
        hi=math.inf,
        runtime=True,
    )
    filter_uniform_mix: float = _param(
        1e-3,
        "share of the belief spread evenly over the window before each heat map, so that consistent heat maps "
        "can pull a confidently wrong belief back within a few frames",
        lo=0.0,
        hi=0.5,
        runtime=True,
    )
    filter_gnss_init_only: bool = _param(
        False, "ablation: fixes only (re-)initialise the belief; heat maps + motion track", runtime=True
    )
    filter_heatmap_floor: float = _param(
        0.001, "heat-map likelihood floor relative to its peak", lo=0.0, hi=1.0, runtime=True
    )
    filter_lost_chi2: float = _param(
        18.4,
        "belief mean vs fix d^2 (both covariances) beyond this disagrees; chi2(2) 99.99 %",
        lo=0.0,
        hi=math.inf,
        runtime=True,
    )
    filter_lost_updates: int = _param(
        10,
        "re-initialise from the fix after this many consecutive disagreements ...",
        unit="fixes",
        lo=1,
        hi=INT_MAX,
        runtime=True,
    )
    filter_lost_s: float = _param(
        3.0, "... spanning at least this many seconds", unit="s", lo=0.0, hi=math.inf, runtime=True
    )
    filter_max_gap_s: float = _param(
        5.0,
        "a step longer than this, or a stamp this much older (restart), re-initialises",
        unit="s",
        lo=0.0,
        hi=math.inf,
        runtime=True,
    )
    # --- wide-area re-localization (xview_loc_ros.relocalize; README "Re-localization")
    reloc_index: str = _param(
        "",
        "city index (.npz, `xview-adapt index-map`) built with this very model file (its sha256 is checked); the "
        'model needs a retrieval head; "" = re-localization off (set at run time: a bad file turns it off, logged)',
        runtime=True,
    )
    reloc_radius_m: float = _param(
        150.0,
        "search the index within this distance of the last good position (dead-reckoned), else of the fix; "
        "covers GNSS faults up to ~100 m plus a minute of dead-reckoning drift",
        unit="m",
        lo=0.0,
        hi=math.inf,
        runtime=True,
    )
    reloc_top_k: int = _param(
        8,
        "candidates per search, each scored by the fine model (one batch: about top_k frames of inference)",
        unit="candidates",
        lo=1,
        hi=256,
        runtime=True,
    )
    reloc_fix_std_m: float = _param(
        25.0,
        "search when the fix's largest std exceeds this (beyond ~25 m the vehicle is often outside the 64 m patch)",
        unit="m",
        lo=0.0,
        hi=math.inf,
        runtime=True,
    )
    reloc_min_confidence: float = _param(
        0.1,
        "search when the heat map's confidence stays below this for reloc_low_frames frames (a frame without a "
        "heat map counts)",
        lo=0.0,
        hi=1.0,
        runtime=True,
    )
    reloc_low_frames: int = _param(5, "... this many consecutive frames", unit="frames", lo=1, hi=INT_MAX, runtime=True)
    reloc_on_lost: bool = _param(True, "search when the drive filter reports a lost track", runtime=True)
    reloc_interval_s: float = _param(
        2.0,
        "at most one search per this many seconds of image time (a search costs about top_k frames)",
        unit="s",
        lo=0.0,
        hi=math.inf,
        runtime=True,
    )
    reloc_accept_confidence: float = _param(
        0.2,
        "keep the best candidate only if its heat-map confidence reaches this (and its ambiguity is within "
        "max_ambiguity); otherwise the search changes nothing",
        lo=0.0,
        hi=1.0,
        runtime=True,
    )
    reloc_last_good_max_age_s: float = _param(
        60.0,
        "a last good position older than this is not searched around (the fix is)",
        unit="s",
        lo=0.0,
        hi=math.inf,
        runtime=True,
    )
    reloc_gnss_hold_s: float = _param(
        10.0,
        "with fusion: filter, after a search kept a position the fix disagrees with, fixes that disagree with the "
        "belief are held out of the filter this long (renewed by each such search, ended by a fix that agrees); "
        "0 = never: a jumped fix keeps its weight",
        unit="s",
        lo=0.0,
        hi=math.inf,
        runtime=True,
    )
    reloc_centre_first: bool = _param(
        True,
        "keep the search centre's own patch when it qualifies, before comparing candidates (look-alikes elsewhere "
        "are as confident as the truth); false: the most confident of all patches (ablation)",
        runtime=True,
    )
    reloc_rank: str = _param(
        "confidence",
        "how qualifying patches are compared: confidence = the heat map's | similarity = cosine of the ground "
        "image's and the patch's retrieval descriptors (same pass)",
        runtime=True,
    )
    # --- outputs
    publish_overlay: bool = _param(True, "~/heatmap Image (rgb8)")
    publish_grid: bool = _param(True, "~/heatmap_grid OccupancyGrid in map_frame")
    publish_marker: bool = _param(True, "~/marker Markers: estimate (id 0), GNSS fix (id 1), filtered ellipse (id 2)")
    publish_belief_grid: bool = _param(True, "~/belief_grid OccupancyGrid in map_frame, built only while subscribed")
    viz_max_rate_hz: float = _param(
        10.0,
        "at most this many frames per second for ~/heatmap, ~/heatmap_grid, ~/marker, ~/belief_grid (built on "
        "their own thread after the pose is out; frames arriving faster, or while it is busy, are skipped and "
        "counted); 0 = no limit",
        unit="Hz",
        lo=0.0,
        hi=1000.0,
        runtime=True,
    )
    diagnostics_period_s: float = _param(1.0, "period of /diagnostics", unit="s", lo=0.0, hi=math.inf)
    log_throttle_s: float = _param(
        5.0, "at most one log line per reason per this many seconds", unit="s", lo=0.0, hi=math.inf, runtime=True
    )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "LocalizerParams":
        """Build from a name->value mapping (unknown names are an error); types are checked by validate()."""
        known = {f.name for f in fields(cls)}
        for name in values:
            if name not in known:
                raise ParameterError(name, "unknown parameter")
        return cls(**dict(values))

    def to_dict(self) -> Dict[str, Any]:
        """name -> value; tuples as lists (what YAML and ROS array parameters hold)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def validate(self) -> "LocalizerParams":
        """Check types and ranges; raise ParameterError naming the first bad parameter."""
        for f in fields(self):
            value = getattr(self, f.name)
            default = f.default
            if isinstance(default, tuple):  # a fixed-length array of floats (ROS double array)
                ok = (
                    not isinstance(value, (str, bytes))
                    and hasattr(value, "__len__")
                    and len(value) == len(default)
                    and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value)
                )
                if ok:
                    setattr(self, f.name, tuple(float(x) for x in value))
                else:
                    raise ParameterError(f.name, f"expected {len(default)} finite numbers, got {value!r}")
                continue
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif isinstance(default, float):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                if ok:
                    setattr(self, f.name, float(value))
                    ok = math.isfinite(float(value))
            else:
                ok = isinstance(value, str)
            if not ok:
                raise ParameterError(f.name, f"expected a finite {type(default).__name__}, got {value!r}")
        if not self.model_path:
            raise ParameterError("model_path", "required (path of a checkpoint, ONNX model or TensorRT engine)")
        if not self.tile_source:
            raise ParameterError("tile_source", "required (e.g. xyz:DIR, mbtiles:FILE or https://host/{z}/{x}/{y}.png)")
        if self.backend not in BACKENDS:
            raise ParameterError("backend", f"must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.heading_source not in HEADING_SOURCES:
            raise ParameterError(
                "heading_source", f"must be one of {', '.join(HEADING_SOURCES)}, got {self.heading_source!r}"
            )
        if self.image_transport not in IMAGE_TRANSPORTS:
            raise ParameterError(
                "image_transport", f"must be one of {', '.join(IMAGE_TRANSPORTS)}, got {self.image_transport!r}"
            )
        topic = "compressed_image_topic" if self.image_transport == "compressed" else "image_topic"
        if not getattr(self, topic):
            raise ParameterError(
                topic, f"must not be empty with image_transport {self.image_transport!r}: no camera input"
            )
        if self.fusion not in FUSIONS:
            raise ParameterError("fusion", f"must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        if self.patch_centre not in PATCH_CENTRES:
            raise ParameterError(
                "patch_centre", f"must be one of {', '.join(PATCH_CENTRES)}, got {self.patch_centre!r}"
            )
        if not self.fix_topic:
            raise ParameterError("fix_topic", "must not be empty")
        if self.heading_source == "imu" and not self.imu_topic:
            raise ParameterError("imu_topic", "must not be empty when heading_source is imu")
        if not self.map_frame:
            raise ParameterError("map_frame", "must not be empty")
        for name in (
            "fix_max_age_s",
            "fix_max_gap_s",
            "fix_default_std_m",
            "heading_std_deg",
            "imu_max_age_s",
            "gate_chi2",
            "min_std_m",
            "unobserved_variance",
            "diagnostics_period_s",
            "odom_max_age_s",
            "filter_cell_m",
            "filter_window_m",
            "filter_time_noise_m_per_sqrt_s",
            "filter_no_motion_noise_m_per_sqrt_s",
            "filter_gnss_correlation_s",
            "filter_lost_chi2",
            "filter_max_gap_s",
        ):
            if not getattr(self, name) > 0:
                raise ParameterError(name, f"must be > 0, got {getattr(self, name)!r}")
        for name in (
            "prefetch_ahead_s",
            "log_throttle_s",
            "patch_mpp",
            "filter_odom_noise_m_per_sqrt_m",
            "filter_fix_speed_noise_m_per_sqrt_m",
            "filter_fix_velocity_noise_m_per_sqrt_m",
            "filter_lost_s",
            "heatmap_temperature",
        ):
            if getattr(self, name) < 0:
                raise ParameterError(name, f"must be >= 0, got {getattr(self, name)!r}")
        if not self.filter_window_m >= 8 * self.filter_cell_m:
            raise ParameterError(
                "filter_window_m", f"must be at least 8 cells ({8 * self.filter_cell_m} m), got {self.filter_window_m}"
            )
        if not self.filter_window_m / self.filter_cell_m <= 1024:
            raise ParameterError(
                "filter_window_m",
                f"{self.filter_window_m} m / {self.filter_cell_m} m cells is over 1024 cells a side (too slow)",
            )
        for name in ("filter_gnss_outlier_weight", "filter_heatmap_floor"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ParameterError(name, f"must be in (0, 1), got {getattr(self, name)}")
        for name in ("reloc_radius_m", "reloc_fix_std_m"):
            if not getattr(self, name) > 0:
                raise ParameterError(name, f"must be > 0, got {getattr(self, name)!r}")
        for name in ("reloc_interval_s", "reloc_last_good_max_age_s", "reloc_gnss_hold_s"):
            if getattr(self, name) < 0:
                raise ParameterError(name, f"must be >= 0, got {getattr(self, name)!r}")
        for name in ("reloc_min_confidence", "reloc_accept_confidence"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ParameterError(name, f"must be in [0, 1], got {getattr(self, name)}")
        if not 1 <= self.reloc_top_k <= 256:
            raise ParameterError("reloc_top_k", f"must be in [1, 256], got {self.reloc_top_k}")
        if self.reloc_rank not in RELOC_RANKS:
            raise ParameterError("reloc_rank", f"must be one of {', '.join(RELOC_RANKS)}, got {self.reloc_rank!r}")
        if self.reloc_low_frames < 1:
            raise ParameterError("reloc_low_frames", f"must be >= 1, got {self.reloc_low_frames}")
        if self.filter_lost_updates < 1:
            raise ParameterError("filter_lost_updates", f"must be >= 1, got {self.filter_lost_updates}")
        if self.max_image_pixels <= 0:
            raise ParameterError("max_image_pixels", f"must be > 0, got {self.max_image_pixels}")
        if self.threads < 0:
            raise ParameterError("threads", f"must be >= 0, got {self.threads}")
        if self.patch_size_px < 0:
            raise ParameterError("patch_size_px", f"must be >= 0 (0 = the model's), got {self.patch_size_px}")
        if self.tile_zoom < -1 or self.tile_zoom > 24:
            raise ParameterError("tile_zoom", f"must be -1 (auto) or 0..24, got {self.tile_zoom}")
        if not 0.0 <= self.max_missing_fraction <= 1.0:
            raise ParameterError("max_missing_fraction", f"must be in [0, 1], got {self.max_missing_fraction}")
        if not 0.0 <= self.viz_max_rate_hz <= 1000.0:
            raise ParameterError(
                "viz_max_rate_hz", f"must be in [0, 1000] Hz (0 = no limit), got {self.viz_max_rate_hz}"
            )
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ParameterError("min_confidence", f"must be in [0, 1], got {self.min_confidence}")
        if not self.max_ambiguity > 0.0:
            raise ParameterError("max_ambiguity", f"must be > 0, got {self.max_ambiguity}")
        if any(abs(x) > 100.0 for x in self.camera_lever_arm_m):
            raise ParameterError(
                "camera_lever_arm_m", f"must be within 100 m of base_frame, got {self.camera_lever_arm_m}"
            )
        if self.heading_source == "none" and any(self.camera_lever_arm_m[:2]):
            raise ParameterError(
                "camera_lever_arm_m", "a horizontal lever arm needs the vehicle's heading (heading_source imu or fixed)"
            )
        for name in ("camera_yaw_offset_deg", "imu_yaw_offset_deg"):
            if not -360.0 <= getattr(self, name) <= 360.0:
                raise ParameterError(name, f"must be in [-360, 360] degrees, got {getattr(self, name)}")
        if not self.base_frame:
            raise ParameterError("base_frame", "must not be empty")
        if not -360.0 <= self.fixed_heading_deg <= 360.0:
            raise ParameterError(
                "fixed_heading_deg", f"must be a compass angle in [-360, 360], got {self.fixed_heading_deg}"
            )
        if not self.datum_from_first_fix:
            if not (-90.0 <= self.datum_lat <= 90.0):
                raise ParameterError("datum_lat", f"must be a latitude in [-90, 90] degrees, got {self.datum_lat}")
            if not (-180.0 <= self.datum_lon <= 180.0):
                raise ParameterError("datum_lon", f"must be a longitude in [-180, 180] degrees, got {self.datum_lon}")
        return self

    def filter_params(self) -> FilterParams:
        """The drive filter's parameters (xview_loc_ros.drive_filter.FilterParams)."""
        return FilterParams(
            cell_m=self.filter_cell_m,
            window_m=self.filter_window_m,
            noise_odom_per_sqrt_m=self.filter_odom_noise_m_per_sqrt_m,
            noise_fix_speed_per_sqrt_m=self.filter_fix_speed_noise_m_per_sqrt_m,
            noise_fix_velocity_per_sqrt_m=self.filter_fix_velocity_noise_m_per_sqrt_m,
            noise_per_sqrt_s=self.filter_time_noise_m_per_sqrt_s,
            no_motion_noise_per_sqrt_s=self.filter_no_motion_noise_m_per_sqrt_s,
            gnss_outlier_weight=self.filter_gnss_outlier_weight,
            gnss_correlation_s=self.filter_gnss_correlation_s,
            heatmap_temperature=self.heatmap_temperature,
            likelihood_floor=self.filter_heatmap_floor,
            lost_chi2=self.filter_lost_chi2,
            lost_updates=self.filter_lost_updates,
            lost_s=self.filter_lost_s,
            max_gap_s=self.filter_max_gap_s,
            gnss_init_only=self.filter_gnss_init_only,
            uniform_mix=self.filter_uniform_mix,
        )

    def reloc_params(self) -> RelocParams:
        """Re-localization's parameters (xview_loc_ros.relocalize.RelocParams)."""
        return RelocParams(
            radius_m=self.reloc_radius_m,
            top_k=self.reloc_top_k,
            fix_std_m=self.reloc_fix_std_m,
            min_confidence=self.reloc_min_confidence,
            low_frames=self.reloc_low_frames,
            on_lost=self.reloc_on_lost,
            interval_s=self.reloc_interval_s,
            accept_confidence=self.reloc_accept_confidence,
            max_ambiguity=self.max_ambiguity,
            last_good_max_age_s=self.reloc_last_good_max_age_s,
            gnss_hold_s=self.reloc_gnss_hold_s,
            centre_first=self.reloc_centre_first,
            rank=self.reloc_rank,
        )

    def check_model(self, config: Mapping[str, Any]) -> None:
        """Check the patch and heading parameters against the model's preprocessing config."""
        if self.patch_size_px and self.patch_size_px != int(config["aerial_size"]):
            raise ParameterError(
                "patch_size_px",
                f"{self.patch_size_px} px differs from the model's aerial size {config['aerial_size']} px (0 = use the model's)",
            )
        if self.patch_mpp and abs(self.patch_mpp - float(config["mpp"])) > 1e-9:
            raise ParameterError(
                "patch_mpp",
                f"{self.patch_mpp} m/px differs from the model's {config['mpp']} m/px (0 = use the model's)",
            )
        if config.get("known_orientation") and self.heading_source == "none":
            raise ParameterError(
                "heading_source", "is 'none' but the model expects a known orientation (use imu or fixed)"
            )
