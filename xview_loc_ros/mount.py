# SPDX-License-Identifier: Apache-2.0
"""Where the camera sits on the vehicle (REP-103/105): the lever arm and yaw of the camera in
``base_frame``, from parameters or from static transforms (the node reads ``/tf_static``; this module
does the arithmetic, ROS-free).

``base_frame`` axes: x forward, y left, z up, metres. The camera's forward direction is its frame's +x
axis, or +z for an optical frame (a name ending in ``optical_frame`` or ``_optical``, REP-103's camera
convention: z forward, x right, y down). The model localizes the camera; the node publishes
``base_frame``: base = camera - R(yaw) (x, y), with yaw the vehicle's ENU yaw. The height of the camera
(z) does not move a map position and is ignored.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Deque, Dict, Iterable, List, Optional, Tuple

import numpy as np

#: a static transform: (parent frame, child frame, translation x y z in metres, quaternion x y z w)
StaticTransform = Tuple[str, str, Tuple[float, float, float], Tuple[float, float, float, float]]


@dataclass(frozen=True)
class CameraMount:
    """The camera in ``base_frame``: ``lever_arm_m`` (x forward, y left, z up, metres),
    ``yaw_offset_deg`` (camera forward vs base x, counter-clockwise, degrees) and where they came from
    (``parameters`` or ``tf_static``)."""

    lever_arm_m: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    yaw_offset_deg: float = 0.0
    source: str = "parameters"

    def offset_en(self, base_yaw_enu: Optional[float]) -> Tuple[float, float]:
        """Camera minus base position in ENU metres (east, north) for the vehicle's ENU yaw (radians,
        counter-clockwise from east); (0, 0) without a horizontal lever arm. Raises ValueError when the
        arm is non-zero and the yaw unknown."""
        x, y = self.lever_arm_m[0], self.lever_arm_m[1]
        if x == 0.0 and y == 0.0:
            return 0.0, 0.0
        if base_yaw_enu is None:
            raise ValueError("a camera lever arm needs the vehicle's heading")
        c, s = math.cos(base_yaw_enu), math.sin(base_yaw_enu)
        return c * x - s * y, s * x + c * y


def _matrix(translation: Tuple[float, float, float], quaternion: Tuple[float, float, float, float]) -> np.ndarray:
    """4x4 homogeneous transform parent <- child from a translation (m) and a unit quaternion (x, y, z, w)."""
    qx, qy, qz, qw = quaternion
    n = math.sqrt(qx * qx + qy * qy + qz * qz + qw * qw)
    if not n > 0 or not math.isfinite(n):
        raise ValueError(f"quaternion {quaternion} is not a rotation")
    qx, qy, qz, qw = qx / n, qy / n, qz / n, qw / n
    t = np.eye(4)
    t[:3, :3] = [
        [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw)],
        [2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw)],
        [2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy)],
    ]
    t[:3, 3] = translation
    return t


def is_optical_frame(frame: str) -> bool:
    """REP-103's suffix for frames with z forward, x right, y down."""
    return frame.endswith(("optical_frame", "_optical"))


def mount_from_transforms(
    transforms: Iterable[StaticTransform], base_frame: str, camera_frame: str
) -> Optional[CameraMount]:
    """The camera's mount from static transforms: the chain from ``base_frame`` to ``camera_frame``
    through the tree (edges walked either way), or None when the two are not connected. Frame names
    compare without a leading '/'."""
    edges: Dict[str, List[Tuple[str, np.ndarray]]] = collections.defaultdict(list)
    for parent, child, translation, quaternion in transforms:
        p, c = parent.lstrip("/"), child.lstrip("/")
        t = _matrix(translation, quaternion)
        edges[p].append((c, t))
        edges[c].append((p, np.linalg.inv(t)))
    base, camera = base_frame.lstrip("/"), camera_frame.lstrip("/")
    seen = {base: np.eye(4)}
    queue: Deque[str] = collections.deque([base])
    while queue:
        frame = queue.popleft()
        if frame == camera:
            break
        for nxt, t in edges.get(frame, []):
            if nxt not in seen:
                seen[nxt] = seen[frame] @ t  # base <- nxt
                queue.append(nxt)
    if camera not in seen or (camera != base and camera not in edges):
        return None
    t = seen[camera]
    forward = t[:3, :3] @ (np.array([0.0, 0.0, 1.0]) if is_optical_frame(camera) else np.array([1.0, 0.0, 0.0]))
    yaw = math.degrees(math.atan2(float(forward[1]), float(forward[0])))
    lever = (float(t[0, 3]), float(t[1, 3]), float(t[2, 3]))
    return CameraMount(lever, yaw, "tf_static")
