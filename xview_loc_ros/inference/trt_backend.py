# SPDX-License-Identifier: Apache-2.0
"""TensorRT backend (TensorRT 8.6 to 11.x Python API), CUDA buffers held as torch tensors.

Engines are built from the exported ONNX with Builder / OnnxParser / BuilderConfig (an optimisation
profile for batch 1..max_batch), serialized to disk with a keyed sidecar (:mod:`.engine_cache`), and
run with named I/O tensors (``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``).

Versions (``SUPPORTED_TENSORRT``), gated by the major version where their APIs differ:

- below 10 (8.6, 9.x): networks are implicit-batch unless created with ``EXPLICIT_BATCH``, and the
  ONNX parser refuses implicit-batch networks, so the flag is set;
- 10.x: explicit batch is the only mode; FP16 is ``BuilderFlag.FP16`` plus per-layer FP32 pins on the
  matcher (``OBEY_PRECISION_CONSTRAINTS``);
- 11.x: ``BuilderFlag.FP16`` and per-layer precision no longer exist (strong typing): networks are
  created ``STRONGLY_TYPED`` and take their precision from the ONNX's own types. An FP32 ONNX is
  refused for FP16 with a message naming the version.

Every ``trt.X.Y`` name used here is checked against the real binding modules of each supported
version (``test/data/trt_api``, ``test/test_trt_api_names.py``); the build and run sequence against a
recording test double built from those names (``test/test_inference_trt_double.py``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from xview_loc_ros.fsutil import OutputLock, atomic_write_bytes, file_sha256
from xview_loc_ros.inference.base import (
    INPUT_AERIAL,
    INPUT_GROUND,
    Backend,
    InputShapeError,
    ModelFileError,
    input_shapes,
)
from xview_loc_ros.inference.engine_cache import (
    EngineKey,
    cached_engine_path,
    check_engine_machine,
    decide,
    default_cache_dir,
    store_engine,
    timing_cache_path,
)
from xview_loc_ros.inference.modelfile import model_kind, require_file, resolve_onnx_config

log = logging.getLogger(__name__)
WORKSPACE_BYTES = 4 << 30
# (major, minor) inclusive lower bound and exclusive upper bound of the TensorRT versions run here
MIN_TENSORRT = (8, 6)
MAX_TENSORRT_EXCLUSIVE = (12, 0)
SUPPORTED_TENSORRT = "8.6, 9.x, 10.x (10.3+ tested), 11.x"
# ONNX scope of the RollMatcher modules (xview_loc_ros/models/common.py, CrossViewModel.matchers):
# cosine similarities with clamp_min(1e-24), sums of squares and sqrt, which PyTorch keeps out of
# autocast. In FP16, 1e-24 is 0 and the squares overflow, so NaN/inf would reach the heat map.
MATCHER_ONNX_SCOPE = "/matchers."
# ONNX ops that F.normalize exports to (ReduceL2 -> Clip(eps) -> Expand -> Div) in the decoder and
# the orientation head: PyTorch's autocast runs norms in FP32 too; in FP16 the sum of squares
# overflows and eps=1e-12 becomes 0 (0/0 = NaN). Matched on the node name's last segment, which the
# exporter writes as "<Op>" or "<Op>_<n>".
FP32_ONNX_OPS = ("ReduceL2", "Clip", "Sqrt", "Expand", "Div")
FP32_OP_PATTERN = re.compile(r"/(?:" + "|".join(FP32_ONNX_OPS) + r")(?:_\d+)?(?:\]|$)")
# TensorRT wheel distributions whose name says the CUDA major they were built for
CUDA_BUILD_DISTRIBUTIONS = (
    "tensorrt-cu13",
    "tensorrt-cu12",
    "tensorrt-cu11",
    "tensorrt-cu13-libs",
    "tensorrt-cu12-libs",
)


class TensorRTUnavailable(RuntimeError):
    """TensorRT imports but cannot work here: unsupported version, or it cannot create its builder
    or runtime (typically an NVIDIA driver older than the CUDA runtime of this TensorRT build)."""


class EngineDeserializeError(ModelFileError):
    """TensorRT returned no engine for a plan file (corrupt, truncated, or from another build)."""


class UnsupportedPrecision(ValueError):
    """The requested precision cannot be built with this TensorRT version and this ONNX."""


def parse_version(version: str) -> Tuple[int, int]:
    """(major, minor) of a TensorRT version string such as "10.3.0.26"; ValueError when unreadable."""
    m = re.match(r"(\d+)\.(\d+)", version)
    if not m:
        raise ValueError(f"unreadable TensorRT version {version!r}")
    return int(m.group(1)), int(m.group(2))


def check_version(version: str) -> Tuple[int, int]:
    """(major, minor) of a supported TensorRT version; TensorRTUnavailable naming it otherwise."""
    try:
        v = parse_version(version)
    except ValueError as e:
        raise TensorRTUnavailable(str(e)) from e
    if not MIN_TENSORRT <= v < MAX_TENSORRT_EXCLUSIVE:
        raise TensorRTUnavailable(
            f"TensorRT {version} is not supported (supported: {SUPPORTED_TENSORRT}); "
            "install one with pip install '.[trt]' (CUDA 12) or '.[trt-cu13]' (CUDA 13)"
        )
    return v


def import_tensorrt() -> Tuple[Any, int]:
    """(the tensorrt module, its major version) after checking the version is supported."""
    import tensorrt as trt

    major, _ = check_version(str(getattr(trt, "__version__", "?")))
    return trt, major


def network_flags(trt: Any, major: int) -> int:
    """``create_network`` flags: EXPLICIT_BATCH below 10 (the ONNX parser needs it; 10 removed
    implicit batch), STRONGLY_TYPED from 11 (the only way 11 builds reduced precision)."""
    flags = 0
    if major < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if major >= 11:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


def is_precision_sensitive(layer_name: str, metadata: str = "") -> bool:
    """Whether a TensorRT layer must stay FP32 in an FP16 engine: it comes from the matcher's ONNX
    scope, or from a norm's ops (``FP32_ONNX_OPS``). The parser names a layer after its ONNX node,
    and (8.6+) writes the node name into ``metadata`` also for the helper layers one node expands
    into, which keep generated names."""
    for text in (layer_name, metadata or ""):
        if MATCHER_ONNX_SCOPE in text or FP32_OP_PATTERN.search(text):
            return True
    return False


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device: name, compute capability "major.minor", multiprocessor count, and the CUDA
    runtime / TensorRT build in use (a string for the engine key)."""

    name: str
    compute_capability: str
    sm_count: int
    cuda_runtime: str


def tensorrt_cuda_build() -> str:
    """The installed TensorRT wheel's CUDA build (e.g. "tensorrt-cu12 10.3.0"), or "system
    TensorRT" for a distribution package (JetPack's python3-libnvinfer has no wheel metadata)."""
    for dist in CUDA_BUILD_DISTRIBUTIONS:
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "system TensorRT"


class TorchCuda:
    """CUDA as this backend uses it, through torch: device selection, properties, buffers, streams.

    TensorRT builds for and runs on the *current* CUDA device, so :meth:`select` must come before
    the Builder / Runtime is created and :meth:`scope` around every execution.
    """

    def __init__(self) -> None:
        import torch

        self.torch = torch

    def select(self, index: int) -> None:
        if not self.torch.cuda.is_available():
            raise TensorRTUnavailable("TensorRT needs a CUDA GPU and torch sees none")
        count = self.torch.cuda.device_count()
        if not 0 <= index < count:
            raise ValueError(f"device cuda:{index}: this machine has {count} CUDA device(s)")
        self.torch.cuda.set_device(index)

    def info(self, index: int) -> GpuInfo:
        p = self.torch.cuda.get_device_properties(index)
        runtime = f"CUDA {self.torch.version.cuda}, {tensorrt_cuda_build()}"
        return GpuInfo(str(p.name), f"{p.major}.{p.minor}", int(p.multi_processor_count), runtime)

    def device(self, index: int) -> Any:
        return self.torch.device("cuda", index)

    def stream(self, index: int) -> Any:
        return self.torch.cuda.Stream(self.device(index))

    @contextlib.contextmanager
    def scope(self, stream: Any) -> Iterator[None]:
        with self.torch.cuda.device(stream.device), self.torch.cuda.stream(stream):
            yield


def cuda_ops() -> TorchCuda:
    """The CUDA operations the backend uses (tests hand the backend a CPU test double instead)."""
    return TorchCuda()


def device_index(device: Optional[str]) -> int:
    """N of "cuda:N" ("cuda" and None: 0); ValueError for any other device."""
    if device is None or device == "cuda":
        return 0
    m = re.fullmatch(r"cuda:(\d+)", device)
    if not m:
        raise ValueError(f"device {device!r}: TensorRT runs on CUDA devices only (cuda or cuda:N)")
    return int(m.group(1))


def engine_key(trt: Any, gpu: GpuInfo, onnx_sha256: str = "", fp16: bool = False, max_batch: int = 1) -> EngineKey:
    """The engine key for ``gpu`` and the imported TensorRT."""
    return EngineKey(
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        sm_count=gpu.sm_count,
        cuda_runtime=gpu.cuda_runtime,
        trt_version=str(trt.__version__),
        onnx_sha256=onnx_sha256,
        fp16=bool(fp16),
        max_batch=int(max_batch),
    )


def create_or_explain(trt: Any, factory: Callable[[Any], Any], what: str, logger: Any) -> Any:
    """``factory(logger)`` (trt.Builder / trt.Runtime), turning pybind11's "factory function
    returned nullptr" TypeError (and a None) into TensorRTUnavailable with the likely cause."""
    try:
        obj = factory(logger)
    except TypeError as e:
        obj, cause = None, f"{e}"
    else:
        cause = "it returned None"
    if obj is None:
        raise TensorRTUnavailable(
            f"TensorRT {trt.__version__} ({tensorrt_cuda_build()}) could not create its {what} ({cause}): "
            "usually the NVIDIA driver is older than the CUDA runtime this TensorRT build needs "
            "(compare `nvidia-smi`'s 'CUDA Version'), or no GPU is usable; install the build for your "
            "driver (README, 'TensorRT versions')"
        )
    return obj


def pin_sensitive_layers_fp32(trt: Any, network: Any) -> List[str]:
    """Below 11: run the sensitive float layers (:func:`is_precision_sensitive`) in FP32 inside an
    FP16 engine (``precision`` and
    every output type; needs BuilderFlag.OBEY_PRECISION_CONSTRAINTS). Returns the pinned layer names.

    Layers with a non-float output (shape and index arithmetic) keep their types: forcing FLOAT on
    them would be a type error."""
    pinned = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not is_precision_sensitive(layer.name, layer.metadata):
            continue
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not outs or any(o.dtype != trt.DataType.FLOAT for o in outs):
            continue
        layer.precision = trt.DataType.FLOAT
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.DataType.FLOAT)
        pinned.append(layer.name)
    return pinned


def check_strongly_typed_fp16(trt: Any, network: Any, onnx_path: Path) -> None:
    """From 11: FP16 comes from the ONNX's types. Refuse an FP32 ONNX (it would silently build FP32)
    and an FP16 ONNX whose matcher layers are half precision."""
    half, sensitive_half = False, []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        dtypes = [layer.get_output(j).dtype for j in range(layer.num_outputs)]
        if trt.DataType.HALF in dtypes:
            half = True
            if is_precision_sensitive(layer.name, layer.metadata):
                sensitive_half.append(layer.name)
    if not half:
        raise UnsupportedPrecision(
            f"{onnx_path}: TensorRT {trt.__version__} has no FP16 builder flag (strong typing: the ONNX's "
            "own types set the precision) and this ONNX is FP32; build FP32 (no --fp16 / fp16=False), "
            "or use TensorRT 10.x (pip install '.[trt]') for an FP16 engine"
        )
    if sensitive_half:
        raise UnsupportedPrecision(
            f"{onnx_path}: matcher / norm layers {sensitive_half[:5]} are FP16 in this ONNX; they must stay "
            "FP32 (clamp_min(1e-24) and sums of squares under- and overflow in half precision)"
        )


def load_timing_cache(trt: Any, bconf: Any, path: Path) -> None:
    """Give the builder the timing cache at ``path`` (empty when absent or refused), so a rebuild
    reuses earlier tactic timings."""
    data = b""
    if path.is_file():
        data = path.read_bytes()
    cache = bconf.create_timing_cache(data)
    if cache is None and data:  # a damaged file: start empty rather than fail the build
        log.warning("TensorRT timing cache %s is unreadable; starting an empty one", path)
        cache = bconf.create_timing_cache(b"")
    if cache is None or not bconf.set_timing_cache(cache, False):
        log.warning("TensorRT refused the timing cache %s (another TensorRT or GPU?); building without it", path)


def save_timing_cache(bconf: Any, path: Path) -> None:
    """Write the builder's timing cache (now holding this build's timings) durably to ``path``."""
    cache = bconf.get_timing_cache()
    if cache is None:
        log.warning("TensorRT has no timing cache to save after the build")
        return
    atomic_write_bytes(path, bytes(cache.serialize()), durable=True)


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    fp16: bool = False,
    max_batch: int = 1,
    device: int = 0,
    timing_cache: Optional[str | os.PathLike] = None,
    cuda: Optional[TorchCuda] = None,
) -> Path:
    """Parse the ONNX, build a serialized engine on CUDA device ``device`` (FP16 if asked, the
    matcher kept FP32), write it and its keyed sidecar. ``timing_cache``: the timing cache file
    (default: the engine cache's file for this machine)."""
    trt, major = import_tensorrt()
    onnx_path = require_file(onnx_path)
    config = resolve_onnx_config(onnx_path)
    cuda = cuda or cuda_ops()
    cuda.select(device)  # the builder measures and builds on the current device
    gpu = cuda.info(device)
    key = engine_key(trt, gpu, file_sha256(onnx_path), fp16, max_batch)
    tc_path = Path(timing_cache) if timing_cache is not None else timing_cache_path(default_cache_dir(), key)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = create_or_explain(trt, trt.Builder, "builder", logger)
    network = builder.create_network(network_flags(trt, major))
    if network is None:
        raise RuntimeError(f"{onnx_path}: TensorRT {trt.__version__} could not create a network definition")
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelFileError(f"{onnx_path}: TensorRT {trt.__version__}'s ONNX parser failed: {errors}")
    bconf = builder.create_builder_config()
    if bconf is None:
        raise RuntimeError(f"{onnx_path}: TensorRT {trt.__version__} could not create a builder config")
    bconf.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    # TF32 matmuls/convs (on by default on Ampere+) would break FP32 parity with ONNX Runtime and
    # only change what FP16 leaves in FP32
    bconf.clear_flag(trt.BuilderFlag.TF32)
    if fp16:
        if major >= 11:
            check_strongly_typed_fp16(trt, network, onnx_path)
        else:
            bconf.set_flag(trt.BuilderFlag.FP16)
            # without it the per-layer precisions below are hints TensorRT may ignore
            bconf.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            pinned = pin_sensitive_layers_fp32(trt, network)
            if not any(MATCHER_ONNX_SCOPE in name for name in pinned):
                raise ModelFileError(
                    f"{onnx_path}: no layer of the matcher scope {MATCHER_ONNX_SCOPE!r} found; an FP16 engine "
                    "would run its cosine similarities in half precision (re-export with `xview-adapt export`)"
                )
            log.info("FP16 engine: %d matcher and norm layers kept in FP32", len(pinned))
    profile = builder.create_optimization_profile()
    for name, shape in zip((INPUT_GROUND, INPUT_AERIAL), input_shapes(config)):
        profile.set_shape(name, (1, *shape), (1, *shape), (int(max_batch), *shape))
    bconf.add_optimization_profile(profile)
    load_timing_cache(trt, bconf, tc_path)
    log.info(
        "building TensorRT %s engine from %s (%s, max batch %d) on cuda:%d (%s): this takes a while",
        trt.__version__,
        onnx_path,
        "fp16" if fp16 else "fp32",
        max_batch,
        device,
        gpu.name,
    )
    serialized = builder.build_serialized_network(network, bconf)
    if serialized is None:
        raise RuntimeError(
            f"{onnx_path}: TensorRT {trt.__version__} engine build failed (build_serialized_network returned "
            "None; see the TensorRT log above)"
        )
    save_timing_cache(bconf, tc_path)
    return store_engine(engine_path, serialized, key, config, onnx_path)


def ensure_engine(
    onnx_path: str | os.PathLike,
    cache_dir: Optional[str | os.PathLike] = None,
    fp16: bool = False,
    max_batch: int = 1,
    device: int = 0,
    cuda: Optional[TorchCuda] = None,
    force: bool = False,
) -> Path:
    """The cached engine for this ONNX on CUDA device ``device``, (re)built when missing, stale, or
    ``force`` (a plan that did not deserialize)."""
    onnx_path = require_file(onnx_path)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    sha = file_sha256(onnx_path)
    engine_path = cached_engine_path(cache, onnx_path, sha, fp16, max_batch)
    # Two processes filling one slot would both build for minutes, then replace each other's engine
    # between the other's engine and sidecar writes.
    with OutputLock(engine_path, "TensorRT engine cache slot"):
        trt, _ = import_tensorrt()
        cuda = cuda or cuda_ops()
        cuda.select(device)
        key = engine_key(trt, cuda.info(device), sha, fp16, max_batch)
        decision = decide(engine_path, key)
        reason = "rebuilding: the cached plan did not deserialize" if force else decision.reason
        log.info("TensorRT engine cache: %s", reason)
        if force or decision.rebuild:
            build_engine(onnx_path, engine_path, fp16, max_batch, device, timing_cache_path(cache, key), cuda)
    return engine_path


class TensorRTBackend(Backend):
    """A serialized engine run on one CUDA device with torch-allocated buffers. ``cuda``: the CUDA
    operations (default :class:`TorchCuda`)."""

    name = "tensorrt"

    def __init__(
        self, engine_path: str | os.PathLike, device: Optional[str] = None, cuda: Optional[TorchCuda] = None
    ) -> None:
        trt, _ = import_tensorrt()
        self._trt = trt
        engine_path = require_file(engine_path)
        index = device_index(device)
        self.cuda = cuda or cuda_ops()
        self.cuda.select(index)  # the engine's memory and kernels live on the device current now
        self.gpu = self.cuda.info(index)
        meta = check_engine_machine(engine_path, engine_key(trt, self.gpu))
        runtime = create_or_explain(trt, trt.Runtime, "runtime", trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise EngineDeserializeError(
                f"{engine_path}: TensorRT {trt.__version__} cannot deserialize this engine (corrupt or "
                "truncated file, or built by another TensorRT build); rebuild it from the ONNX"
            )
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RuntimeError(
                f"{engine_path}: TensorRT could not create an execution context on cuda:{index} (out of GPU memory?)"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if sorted(self._inputs) != sorted([INPUT_GROUND, INPUT_AERIAL]):
            raise ModelFileError(
                f"{engine_path}: engine inputs {self._inputs}, expected {[INPUT_GROUND, INPUT_AERIAL]}"
            )
        self.fp16 = bool(meta["engine_key"]["fp16"])
        self.device = self.cuda.device(index)
        self.stream = self.cuda.stream(index)
        super().__init__(meta["config"], engine_path, outputs, max_batch=int(meta["engine_key"]["max_batch"]))

    def _torch_dtype(self, name: str) -> Any:
        trt, t = self._trt, self.cuda.torch
        table = {trt.DataType.FLOAT: t.float32, trt.DataType.HALF: t.float16, trt.DataType.INT32: t.int32}
        return table[self.engine.get_tensor_dtype(name)]

    def _run(self, ground: np.ndarray, aerial: np.ndarray, names: Sequence[str]) -> Dict[str, np.ndarray]:
        t = self.cuda.torch
        with self.cuda.scope(self.stream):
            feeds = {
                INPUT_GROUND: t.from_numpy(ground).to(self.device, non_blocking=True),
                INPUT_AERIAL: t.from_numpy(aerial).to(self.device, non_blocking=True),
            }
            for name, x in feeds.items():
                x = x.to(self._torch_dtype(name)).contiguous()
                feeds[name] = x
                if not self.context.set_input_shape(name, tuple(x.shape)):
                    raise InputShapeError(
                        f"{self.model_path}: TensorRT refused input {name} of shape {tuple(x.shape)} "
                        f"(the engine's profile takes batch 1..{self.max_batch})"
                    )
                if not self.context.set_tensor_address(name, x.data_ptr()):
                    raise RuntimeError(f"{self.model_path}: TensorRT set_tensor_address failed for input {name}")
            outs = {}
            for name in self.outputs:  # every output needs an address, even the ones not asked for
                shape = tuple(self.context.get_tensor_shape(name))
                outs[name] = t.empty(shape, dtype=self._torch_dtype(name), device=self.device)
                if not self.context.set_tensor_address(name, outs[name].data_ptr()):
                    raise RuntimeError(f"{self.model_path}: TensorRT set_tensor_address failed for output {name}")
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"{self.model_path}: TensorRT execute_async_v3 failed (see the TensorRT log)")
        self.stream.synchronize()
        return {n: outs[n].float().cpu().numpy() for n in names}

    def describe(self) -> str:
        return (
            f"tensorrt {self._trt.__version__} on {self.device} ({self.gpu.name}, {self.gpu.cuda_runtime}), "
            f"{'fp16' if self.fp16 else 'fp32'}, max batch {self.max_batch}; {self.model_path.name}; {self._sizes()}"
        )


def open_tensorrt(
    model_path: str | os.PathLike,
    device: Optional[str] = None,
    fp16: bool = False,
    max_batch: int = 1,
    cache_dir: Optional[str | os.PathLike] = None,
    cuda: Optional[TorchCuda] = None,
) -> TensorRTBackend:
    """An engine file directly, or an ONNX file through the engine cache. A cached plan that does
    not deserialize is rebuilt once; a second failure is an error naming both attempts."""
    if model_kind(model_path) != "onnx":
        return TensorRTBackend(model_path, device, cuda)
    index = device_index(device)
    cuda = cuda or cuda_ops()
    engine = ensure_engine(model_path, cache_dir, fp16, max_batch, index, cuda)
    try:
        return TensorRTBackend(engine, device, cuda)
    except EngineDeserializeError as first:
        log.warning("TensorRT engine cache: %s; rebuilding it once", first)
        ensure_engine(model_path, cache_dir, fp16, max_batch, index, cuda, force=True)
        try:
            return TensorRTBackend(engine, device, cuda)
        except EngineDeserializeError as second:
            raise EngineDeserializeError(
                f"{engine}: rebuilt from {model_path}, and TensorRT still cannot deserialize the new engine; "
                "the TensorRT install or GPU driver is at fault, not the model"
            ) from second
