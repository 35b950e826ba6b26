# SPDX-License-Identifier: Apache-2.0
"""Parameters of the localizer node: names, defaults (mirrored by config/localizer.yaml), validation.

ROS-free: the node declares every field of :class:`LocalizerParams` as a ROS parameter with the
field's default, reads them back into a :class:`LocalizerParams` and calls :meth:`validate`, which
raises :class:`ParameterError` naming the parameter. Units are in the field names or comments:
seconds (``_s``), metres (``_m``), degrees (``_deg``, compass: clockwise from north), pixels (``_px``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Mapping

from xview_loc_ros.drive_filter import FilterParams
from xview_loc_ros.sensors import DEFAULT_MAX_IMAGE_PIXELS

NODE_NAME = "xview_localizer"

HEADING_SOURCES = ("imu", "fixed", "none")
FUSIONS = ("filter", "frame")
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")


class ParameterError(ValueError):
    """An invalid node parameter; the message starts with the parameter's name."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"parameter '{name}': {problem}")
        self.name = name


@dataclass
class LocalizerParams:
    # --- model and inference
    model_path: str = ""  # checkpoint (.pt), ONNX (.onnx) or TensorRT engine; required
    backend: str = "auto"  # auto | torch | onnxruntime | tensorrt
    device: str = ""  # "" = backend default (cuda if available), else e.g. "cpu", "cuda:0"
    fp16: bool = False
    threads: int = 0  # CPU inference threads; 0 = library default
    # --- aerial tiles and patch
    tile_source: str = (
        ""  # xyz:DIR, tms:DIR, mbtiles:FILE, pmtiles:FILE, geotiff:FILE, http(s)://.../{z}/{x}/{y}.png; required
    )
    tile_cache_dir: str = ""  # disk cache for HTTP tiles; "" = none
    tile_zoom: int = -1  # -1 = finest zoom at least as fine as the patch m/px
    patch_size_px: int = 0  # 0 = the model's aerial size; otherwise must equal it
    patch_mpp: float = 0.0  # metres per pixel; 0 = the model's; otherwise must equal it
    max_missing_fraction: float = 0.2  # reject a frame whose patch lacks more than this fraction of tiles
    prefetch_ahead_s: float = 3.0  # prefetch patches this far ahead along the fix motion; 0 = off
    # --- input topics (relative names resolve in the node's namespace; remap freely)
    fix_topic: str = "gnss/fix"
    image_topic: str = "camera/image"  # sensor_msgs/Image; "" = not subscribed
    compressed_image_topic: str = "camera/image/compressed"  # sensor_msgs/CompressedImage; "" = not subscribed
    imu_topic: str = "imu/data"  # orientation in ENU (REP-145)
    camera_info_topic: str = "camera/camera_info"  # "" = not subscribed; checks a pinhole model's field of view
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # camera frames declaring more pixels are dropped before decoding
    # --- fix interpolation at the image stamp
    fix_max_age_s: float = 1.0  # newest fix older than the image by more than this -> reject
    fix_max_gap_s: float = 2.0  # the two fixes around the image stamp further apart than this -> reject
    fix_default_std_m: float = 10.0  # GNSS std when the fix's covariance type is UNKNOWN
    # --- heading
    heading_source: str = "imu"  # imu | fixed | none (unknown-orientation models only)
    fixed_heading_deg: float = 0.0  # compass degrees, used when heading_source = fixed
    heading_std_deg: float = 5.0  # heading std when the source gives none (fixed, or IMU covariance unknown)
    imu_max_age_s: float = 0.5  # the nearest IMU sample further than this from the image stamp -> reject
    # --- frames and datum
    map_frame: str = "map"  # local ENU frame at the datum (REP-105)
    datum_from_first_fix: bool = True  # anchor `map` at the first good fix; False = datum_lat/lon/alt
    datum_lat: float = 0.0  # degrees WGS84
    datum_lon: float = 0.0
    datum_alt: float = 0.0  # metres above the ellipsoid
    fix_frame_id: str = ""  # frame_id of ~/fix; "" = copy the input fix's frame (the antenna)
    # --- gating
    gate_chi2: float = 13.8  # Mahalanobis d^2 of (estimate - fix) vs the summed covariances; 13.8 = chi2(2 dof) 99.9 %
    min_confidence: float = 0.05  # heat-map confidence below this -> reject
    max_ambiguity: float = 0.8  # second-mode mass / chosen-mode mass above this -> reject
    min_std_m: float = 0.25  # floor on the published position std
    unobserved_variance: float = 1.0e6  # variance published for z, roll, pitch (m^2, rad^2)
    # --- fusion over the drive (xview_loc_ros.drive_filter; positions in map_frame, ENU metres)
    fusion: str = "filter"  # filter: ~/pose is the drive filter's belief | frame: each frame alone, gated
    odom_topic: str = "odom"  # nav_msgs/Odometry (twist in the child frame); "" = not subscribed
    odom_max_age_s: float = 0.5  # an odometry sample holds this long; longer gaps fall back to fix speed
    filter_cell_m: float = 0.5  # belief grid cell side
    filter_window_m: float = 96.0  # belief grid side (re-centres on the belief by whole cells)
    filter_odom_noise_m_per_sqrt_m: float = 0.15  # position std added per sqrt(metre) driven, odometry + IMU heading
    filter_fix_speed_noise_m_per_sqrt_m: float = 0.4  # ... when the speed comes from successive fixes
    filter_fix_velocity_noise_m_per_sqrt_m: float = 0.8  # ... fix velocity vector (no heading)
    filter_time_noise_m_per_sqrt_s: float = 0.3  # position std added per sqrt(second) with any motion source
    filter_no_motion_noise_m_per_sqrt_s: float = 3.0  # ... when no motion source is available
    filter_gnss_outlier_weight: float = 0.05  # weight of the flat part of the GNSS likelihood (multipath)
    filter_gnss_correlation_s: float = 5.0  # GNSS error correlation time: fix covariance x max(1, this / dt)
    heatmap_temperature: float = 2.5  # exponent on the heat map's probabilities (bench/calibrate_temperature.py); 0 = heat maps ignored (ablation)
    filter_gnss_init_only: bool = False  # ablation: fixes only (re-)initialise the belief; heat maps + motion track
    filter_heatmap_floor: float = 0.001  # heat-map likelihood floor relative to its peak
    filter_lost_chi2: float = 18.4  # belief mean vs fix d^2 (both covariances) beyond this disagrees; chi2(2) 99.99 %
    filter_lost_updates: int = 10  # re-initialise from the fix after this many consecutive disagreements ...
    filter_lost_s: float = 3.0  # ... spanning at least this many seconds
    filter_max_gap_s: float = 5.0  # a step longer than this, or a stamp this much older (restart), re-initialises
    # --- outputs
    publish_overlay: bool = True  # ~/heatmap Image (rgb8)
    publish_grid: bool = True  # ~/heatmap_grid OccupancyGrid in map_frame
    publish_marker: bool = True  # ~/marker Markers: estimate (id 0), GNSS fix (id 1), filtered ellipse (id 2)
    publish_belief_grid: bool = True  # ~/belief_grid OccupancyGrid in map_frame, built only while subscribed
    diagnostics_period_s: float = 1.0
    log_throttle_s: float = 5.0  # at most one log line per reason per this many seconds

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "LocalizerParams":
        """Build from a name->value mapping (unknown names are an error); types are checked by validate()."""
        known = {f.name for f in fields(cls)}
        for name in values:
            if name not in known:
                raise ParameterError(name, "unknown parameter")
        return cls(**dict(values))

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def validate(self) -> "LocalizerParams":
        """Check types and ranges; raise ParameterError naming the first bad parameter."""
        for f in fields(self):
            value = getattr(self, f.name)
            default = f.default
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
        if not (self.image_topic or self.compressed_image_topic):
            raise ParameterError(
                "image_topic", "image_topic and compressed_image_topic are both empty: no camera input"
            )
        if self.fusion not in FUSIONS:
            raise ParameterError("fusion", f"must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
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
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ParameterError("min_confidence", f"must be in [0, 1], got {self.min_confidence}")
        if not self.max_ambiguity > 0.0:
            raise ParameterError("max_ambiguity", f"must be > 0, got {self.max_ambiguity}")
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
