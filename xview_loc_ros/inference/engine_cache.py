# SPDX-License-Identifier: Apache-2.0
"""TensorRT engine cache: keys, metadata sidecars and rebuild decisions (pure Python).

A serialized engine only runs on the GPU model and TensorRT version it was built with, and only
means the network it was built from. The cache therefore keys every engine by GPU name, compute
capability, TensorRT version, the ONNX file's sha256 and the build options (FP16, max batch), keeps
that key in the engine's sidecar (``X.plan.json``) and rebuilds when any part differs.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from xview_loc_ros.fsutil import atomic_write_bytes
from xview_loc_ros.inference.base import ModelFileError
from xview_loc_ros.inference.modelfile import read_sidecar, sidecar_path, write_sidecar

CACHE_ENV = "XVIEW_LOC_ENGINE_CACHE"


@dataclass(frozen=True)
class EngineKey:
    """What an engine depends on. ``compute_capability`` as "major.minor" (e.g. "9.0")."""

    gpu_name: str
    compute_capability: str
    trt_version: str
    onnx_sha256: str
    fp16: bool
    max_batch: int

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str) -> "EngineKey":
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in d]
        if missing:
            raise ModelFileError(f"{source}: engine key lacks {missing}")
        return cls(**{n: d[n] for n in names})


# Parts that tie an engine to a machine, versus parts that tie it to a network and build options.
MACHINE_FIELDS = ("gpu_name", "compute_capability", "trt_version")
_LABELS = {
    "gpu_name": "GPU",
    "compute_capability": "compute capability",
    "trt_version": "TensorRT version",
    "onnx_sha256": "ONNX file (sha256)",
    "fp16": "FP16",
    "max_batch": "max batch",
}


def key_differences(stored: EngineKey, current: EngineKey, only: Optional[tuple] = None) -> List[str]:
    """Human-readable differences, e.g. "GPU: built for 'A100', this machine 'H100'"."""
    out = []
    for f in fields(EngineKey):
        if only is not None and f.name not in only:
            continue
        a, b = getattr(stored, f.name), getattr(current, f.name)
        if a != b:
            if f.name == "onnx_sha256":
                a, b = a[:12], b[:12]
            out.append(f"{_LABELS[f.name]}: built for {a!r}, now {b!r}")
    return out


@dataclass(frozen=True)
class CacheDecision:
    rebuild: bool
    reason: str


def decide(engine_path: str | os.PathLike, current: EngineKey) -> CacheDecision:
    """Whether the engine at ``engine_path`` can be used for ``current`` or must be (re)built."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        return CacheDecision(True, f"no cached engine at {engine_path}")
    try:
        meta = read_sidecar(engine_path)
        stored = EngineKey.from_dict(meta.get("engine_key") or {}, str(sidecar_path(engine_path)))
    except ModelFileError as e:
        return CacheDecision(True, f"cached engine has no usable key ({e})")
    diffs = key_differences(stored, current)
    if diffs:
        return CacheDecision(True, "cached engine is stale: " + "; ".join(diffs))
    return CacheDecision(
        False,
        f"cached engine {engine_path.name} matches ({current.gpu_name}, "
        f"sm {current.compute_capability}, TensorRT {current.trt_version})",
    )


def check_engine_machine(engine_path: str | os.PathLike, current_machine: EngineKey) -> Dict[str, Any]:
    """For an engine given directly (no ONNX to rebuild from): its sidecar, after checking it was
    built for this GPU and TensorRT version; ModelFileError naming the differences otherwise."""
    meta = read_sidecar(engine_path)
    stored = EngineKey.from_dict(meta.get("engine_key") or {}, str(sidecar_path(engine_path)))
    diffs = key_differences(stored, current_machine, only=MACHINE_FIELDS)
    if diffs:
        raise ModelFileError(
            f"{engine_path}: engine does not fit this machine ({'; '.join(diffs)}); "
            "rebuild it from the ONNX (`xview-adapt export --engine` or open the .onnx with backend tensorrt)"
        )
    return meta


def default_cache_dir() -> Path:
    """$XVIEW_LOC_ENGINE_CACHE, else ~/.cache/xview_loc_ros/engines."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "xview_loc_ros" / "engines"


def cached_engine_path(cache_dir: str | os.PathLike, onnx_path: str | os.PathLike, fp16: bool, max_batch: int) -> Path:
    """One slot per (ONNX file name, build options); a stale engine in the slot is replaced."""
    prec = "fp16" if fp16 else "fp32"
    return Path(cache_dir) / f"{Path(onnx_path).stem}.{prec}.b{int(max_batch)}.plan"


def store_engine(
    engine_path: str | os.PathLike, engine: bytes, key: EngineKey, config: Dict[str, Any], onnx_path: str | os.PathLike
) -> Path:
    """Write engine and sidecar atomically. The old sidecar goes first, so a crash in between
    leaves an engine without a key (rebuilt next time), never a key describing another engine."""
    engine_path = Path(engine_path)
    side = sidecar_path(engine_path)
    if side.exists():
        side.unlink()
    atomic_write_bytes(engine_path, bytes(engine))
    write_sidecar(engine_path, config, engine_key=key.to_dict(), onnx=str(onnx_path))
    return engine_path
