# SPDX-License-Identifier: Apache-2.0
"""TensorRT backend (TensorRT 10 Python API), CUDA buffers held as torch tensors.

Written against NVIDIA's TensorRT 10 documentation: engines are built from the exported ONNX with
Builder / OnnxParser / BuilderConfig (FP16 flag when asked, an optimisation profile for batch
1..max_batch), serialized to disk with a keyed sidecar (:mod:`.engine_cache`), and run with named
I/O tensors (``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``). TensorRT cannot
be installed on the machines this was developed on; everything around it is tested there.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from xview_loc_ros.fsutil import OutputLock, file_sha256
from xview_loc_ros.inference.base import INPUT_AERIAL, INPUT_GROUND, Backend, ModelFileError, input_shapes
from xview_loc_ros.inference.engine_cache import (
    EngineKey,
    cached_engine_path,
    check_engine_machine,
    decide,
    default_cache_dir,
    store_engine,
)
from xview_loc_ros.inference.modelfile import model_kind, require_file, resolve_onnx_config

log = logging.getLogger(__name__)
WORKSPACE_BYTES = 4 << 30


def machine_key(onnx_sha256: str = "", fp16: bool = False, max_batch: int = 1, device: int = 0) -> EngineKey:
    """The engine key for this machine's GPU ``device`` and installed TensorRT."""
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return EngineKey(
        torch.cuda.get_device_name(device), f"{major}.{minor}", trt.__version__, onnx_sha256, bool(fp16), int(max_batch)
    )


def _trt_logger() -> Any:
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    fp16: bool = False,
    max_batch: int = 1,
    device: int = 0,
) -> Path:
    """Parse the ONNX, build a serialized engine (FP16 if asked), write it and its keyed sidecar."""
    import tensorrt as trt

    onnx_path = require_file(onnx_path)
    config = resolve_onnx_config(onnx_path)
    key = machine_key(file_sha256(onnx_path), fp16, max_batch, device)
    logger = _trt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelFileError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    bconf = builder.create_builder_config()
    bconf.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if fp16:
        bconf.set_flag(trt.BuilderFlag.FP16)
    else:  # fp32 means fp32: TF32 matmuls/convs (on by default on Ampere+) would break parity with ONNX
        bconf.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    for name, shape in zip((INPUT_GROUND, INPUT_AERIAL), input_shapes(config)):
        profile.set_shape(name, (1, *shape), (1, *shape), (int(max_batch), *shape))
    bconf.add_optimization_profile(profile)
    log.info(
        "building TensorRT engine from %s (%s, max batch %d) for %s: this takes a while",
        onnx_path,
        "fp16" if fp16 else "fp32",
        max_batch,
        key.gpu_name,
    )
    serialized = builder.build_serialized_network(network, bconf)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    return store_engine(engine_path, serialized, key, config, onnx_path)


def ensure_engine(
    onnx_path: str | os.PathLike,
    cache_dir: Optional[str | os.PathLike] = None,
    fp16: bool = False,
    max_batch: int = 1,
    device: int = 0,
) -> Path:
    """The cached engine for this ONNX on this machine, (re)built when missing or stale."""
    onnx_path = require_file(onnx_path)
    engine_path = cached_engine_path(cache_dir or default_cache_dir(), onnx_path, fp16, max_batch)
    # Two processes filling one slot would both build for minutes, then replace each other's engine
    # between the other's engine and sidecar writes.
    with OutputLock(engine_path, "TensorRT engine cache slot"):
        decision = decide(engine_path, machine_key(file_sha256(onnx_path), fp16, max_batch, device))
        log.info("TensorRT engine cache: %s", decision.reason)
        if decision.rebuild:
            build_engine(onnx_path, engine_path, fp16, max_batch, device)
    return engine_path


class TensorRTBackend(Backend):
    """A serialized engine run on one CUDA device with torch-allocated buffers."""

    name = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike, device: Optional[str] = None) -> None:
        import tensorrt as trt
        import torch

        self._torch, self._trt = torch, trt
        engine_path = require_file(engine_path)
        self.device = torch.device(device or "cuda")
        if self.device.type != "cuda":
            raise ValueError(f"device {device!r}: TensorRT runs on CUDA devices only")
        dev_index = self.device.index or 0
        meta = check_engine_machine(engine_path, machine_key(device=dev_index))
        runtime = trt.Runtime(_trt_logger())
        self.engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise ModelFileError(
                f"{engine_path}: TensorRT cannot deserialize this engine (corrupt, or built by another version)"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if sorted(self._inputs) != sorted([INPUT_GROUND, INPUT_AERIAL]):
            raise ModelFileError(
                f"{engine_path}: engine inputs {self._inputs}, expected {[INPUT_GROUND, INPUT_AERIAL]}"
            )
        self.fp16 = bool(meta["engine_key"]["fp16"])
        self.stream = torch.cuda.Stream(self.device)
        super().__init__(meta["config"], engine_path, outputs, max_batch=int(meta["engine_key"]["max_batch"]))

    def _torch_dtype(self, name: str) -> Any:
        trt, t = self._trt, self._torch
        table = {trt.DataType.FLOAT: t.float32, trt.DataType.HALF: t.float16, trt.DataType.INT32: t.int32}
        return table[self.engine.get_tensor_dtype(name)]

    def _run(self, ground: np.ndarray, aerial: np.ndarray, names: Sequence[str]) -> Dict[str, np.ndarray]:
        t = self._torch
        with t.cuda.stream(self.stream):
            feeds = {
                INPUT_GROUND: t.from_numpy(ground).to(self.device, non_blocking=True),
                INPUT_AERIAL: t.from_numpy(aerial).to(self.device, non_blocking=True),
            }
            for name, x in feeds.items():
                x = x.to(self._torch_dtype(name)).contiguous()
                feeds[name] = x
                self.context.set_input_shape(name, tuple(x.shape))
                self.context.set_tensor_address(name, x.data_ptr())
            outs = {}
            for name in self.outputs:  # every output needs an address, even the ones not asked for
                shape = tuple(self.context.get_tensor_shape(name))
                outs[name] = t.empty(shape, dtype=self._torch_dtype(name), device=self.device)
                self.context.set_tensor_address(name, outs[name].data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"{self.model_path}: TensorRT execution failed")
        self.stream.synchronize()
        return {n: outs[n].float().cpu().numpy() for n in names}

    def describe(self) -> str:
        return (
            f"tensorrt {self._trt.__version__} on {self.device} ({self._torch.cuda.get_device_name(self.device)}), "
            f"{'fp16' if self.fp16 else 'fp32'}, max batch {self.max_batch}; {self.model_path.name}; {self._sizes()}"
        )


def open_tensorrt(
    model_path: str | os.PathLike,
    device: Optional[str] = None,
    fp16: bool = False,
    max_batch: int = 1,
    cache_dir: Optional[str | os.PathLike] = None,
) -> TensorRTBackend:
    """An engine file directly, or an ONNX file through the engine cache."""
    dev_index = int(device.split(":", 1)[1]) if device and ":" in device else 0
    if model_kind(model_path) == "onnx":
        model_path = ensure_engine(model_path, cache_dir, fp16, max_batch, dev_index)
    return TensorRTBackend(model_path, device)
