# SPDX-License-Identifier: Apache-2.0
"""TensorRT engine cache: keys, metadata sidecars and rebuild decisions (pure Python).

A serialized engine only runs on the GPU model, TensorRT version and CUDA build it was built with,
and only means the network it was built from. The cache therefore keys every engine by GPU name,
compute capability, multiprocessor (SM) count (Jetson modules of one name differ in it), the CUDA
runtime and TensorRT build (a CUDA 12 and a CUDA 13 build of one TensorRT version are different
engines), TensorRT version, the ONNX file's sha256 and the build options (FP16, max batch), keeps that
key in the engine's sidecar (``X.plan.json``) and rebuilds when any part differs. Slots are named by
the ONNX content hash, so two models that share a file name never evict each other. A persistent
TensorRT timing cache per machine key sits beside the engines, so a rebuild reuses earlier kernel
timings instead of measuring every tactic again.
"""

from __future__ import annotations

import hashlib
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
    """What an engine depends on. ``compute_capability`` as "major.minor" (e.g. "9.0");
    ``sm_count``: the GPU's multiprocessor count; ``cuda_runtime``: the CUDA runtime and TensorRT
    build in use (e.g. "CUDA 12.6, tensorrt-cu12")."""

    gpu_name: str
    compute_capability: str
    sm_count: int
    cuda_runtime: str
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
MACHINE_FIELDS = ("gpu_name", "compute_capability", "sm_count", "cuda_runtime", "trt_version")
_LABELS = {
    "gpu_name": "GPU",
    "compute_capability": "compute capability",
    "sm_count": "multiprocessor count",
    "cuda_runtime": "CUDA runtime / TensorRT build",
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
        f"cached engine {engine_path.name} matches ({current.gpu_name}, {current.sm_count} SMs, "
        f"sm {current.compute_capability}, {current.cuda_runtime}, TensorRT {current.trt_version})",
    )


def check_engine_machine(engine_path: str | os.PathLike, current_machine: EngineKey) -> Dict[str, Any]:
    """For an engine given directly (no ONNX to rebuild from): its sidecar, after checking it was
    built for this GPU, CUDA build and TensorRT version; ModelFileError naming the differences otherwise."""
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


def cached_engine_path(
    cache_dir: str | os.PathLike, onnx_path: str | os.PathLike, onnx_sha256: str, fp16: bool, max_batch: int
) -> Path:
    """One slot per (ONNX content, build options), ``<stem>.<sha256[:16]>.<fp16|fp32>.b<N>.plan``: the
    hash keeps two models with one file name apart, the stem is for people reading the folder. An
    engine for another machine in the slot is replaced (its sidecar key says so)."""
    prec = "fp16" if fp16 else "fp32"
    return Path(cache_dir) / f"{Path(onnx_path).stem}.{onnx_sha256[:16]}.{prec}.b{int(max_batch)}.plan"


def machine_fingerprint(key: EngineKey) -> str:
    """12 hex digits of the key's machine fields: names per-machine files (the timing cache)."""
    text = "|".join(str(getattr(key, f)) for f in MACHINE_FIELDS)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def timing_cache_path(cache_dir: str | os.PathLike, key: EngineKey) -> Path:
    """The TensorRT timing cache for ``key``'s machine: timings are only valid on the GPU and
    TensorRT build that measured them, so each machine key has its own file."""
    return Path(cache_dir) / f"timing.{machine_fingerprint(key)}.cache"


def store_engine(
    engine_path: str | os.PathLike, engine: bytes, key: EngineKey, config: Dict[str, Any], onnx_path: str | os.PathLike
) -> Path:
    """Write engine and sidecar atomically. The old sidecar goes first, so a crash in between
    leaves an engine without a key (rebuilt next time), never a key describing another engine."""
    engine_path = Path(engine_path)
    side = sidecar_path(engine_path)
    if side.exists():
        side.unlink()
    # durable: fsync the data before the rename and the folder after it, so a power cut on a
    # vehicle cannot leave a valid name on an empty or partial engine
    atomic_write_bytes(engine_path, bytes(engine), durable=True)
    write_sidecar(engine_path, config, engine_key=key.to_dict(), onnx=str(onnx_path))
    return engine_path
