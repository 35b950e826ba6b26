# SPDX-License-Identifier: Apache-2.0
"""A recording test double of the ``tensorrt`` module, built from the real API names of one version.

TensorRT cannot run here (no GPU, no libnvinfer). ``test/data/trt_api/<version>.txt`` lists what
``dir()`` says about the real binding module of that version (tools/trt_api_fixtures.py). This double
exposes exactly those names: any attribute the code reads or writes that the real version lacks
raises AttributeError naming the version, so a call that would fail on 11.x fails here too. Behind
the names it does the least that lets the backend's sequence run: the "parser" reads the real ONNX
file (node names become layer names and metadata, as TensorRT's parser does), the "builder" returns
a plan recording its flags and pinned layers, the "runtime" refuses bytes that are not such a plan,
and the "execution context" writes ``output_value`` into the output buffers it was given.

Every call lands in ``double.calls`` as ``(what, detail)`` for order and content checks. Test-only:
nothing here is imported by the packages.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import types
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import numpy as np
import torch

from xview_loc_ros.inference.trt_backend import GpuInfo

API_DIR = Path(__file__).resolve().parent / "data" / "trt_api"
PLAN_MAGIC = b"TRT-TEST-DOUBLE-PLAN\n"
NULLPTR = "__init__(): incompatible constructor arguments... pybind11::init(): factory function returned nullptr"


def api_versions() -> List[str]:
    """The TensorRT versions with a committed API fixture, oldest first."""
    vs = [p.stem for p in API_DIR.glob("*.txt")]
    return sorted(vs, key=lambda v: tuple(int(x) for x in v.split(".")))


def api_names(version: str) -> Set[str]:
    """Names in ``version``'s fixture: top-level ``X`` and ``Class.member``."""
    lines = (API_DIR / f"{version}.txt").read_text().splitlines()
    return {ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")}


class Member:
    """An enum member of the double (int() gives its value, as pybind11 enums do)."""

    def __init__(self, enum: str, name: str, value: int) -> None:
        self.enum, self.name, self.value = enum, name, value

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"<{self.enum}.{self.name}: {self.value}>"


# real values where the code depends on them (bit positions in create_network's flags)
KNOWN_VALUES = {
    "NetworkDefinitionCreationFlag": {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1, "STRONGLY_TYPED": 1},
}


class Guarded:
    """Public attributes exist only where the version's fixture lists ``<api>.<name>``."""

    _api = ""

    def __init__(self, double: "TensorRTTestDouble") -> None:
        object.__setattr__(self, "_double", double)

    def _check(self, name: str) -> None:
        if not name.startswith("_") and f"{self._api}.{name}" not in self._double.names:
            raise AttributeError(f"tensorrt {self._double.version}: {self._api}.{name} does not exist")

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_"):
            type.__getattribute__(type(self), "_check")(self, name)
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._check(name)
        self._double.calls.append((f"{self._api}.{name}=", (object.__getattribute__(self, "name"), value)))
        object.__setattr__(self, name, value)


class FakeTensor(Guarded):
    _api = "ITensor"

    def __init__(self, double: "TensorRTTestDouble", name: str, dtype: Member) -> None:
        super().__init__(double)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", dtype)


class FakeLayer(Guarded):
    _api = "ILayer"

    def __init__(self, double: "TensorRTTestDouble", name: str, outputs: List[FakeTensor]) -> None:
        super().__init__(double)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "metadata", f"[ONNX Layer: {name}]")
        object.__setattr__(self, "_outputs", outputs)
        object.__setattr__(self, "num_outputs", len(outputs))
        object.__setattr__(self, "_output_types", {})
        if "ILayer.precision" in double.names:
            object.__setattr__(self, "precision", double.DataType.FLOAT)

    def get_output(self, i: int) -> FakeTensor:
        return self._outputs[i]

    def set_output_type(self, i: int, dtype: Member) -> None:
        self._double.calls.append(("ILayer.set_output_type", (self.name, i, dtype.name)))
        self._output_types[i] = dtype


class FakeNetwork(Guarded):
    _api = "INetworkDefinition"

    def __init__(self, double: "TensorRTTestDouble", flags: int) -> None:
        super().__init__(double)
        object.__setattr__(self, "name", "network")
        object.__setattr__(self, "_flags", flags)
        object.__setattr__(self, "_layers", [])
        object.__setattr__(self, "_outputs", [])

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    def get_layer(self, i: int) -> FakeLayer:
        return self._layers[i]


class FakeParser(Guarded):
    _api = "OnnxParser"

    def __init__(self, double: "TensorRTTestDouble", network: FakeNetwork, logger: Any) -> None:
        super().__init__(double)
        object.__setattr__(self, "name", "parser")
        object.__setattr__(self, "_network", network)
        object.__setattr__(self, "_errors", [])
        double.calls.append(("OnnxParser", None))

    def parse_from_file(self, path: str) -> bool:
        import onnx

        d = self._double
        d.calls.append(("OnnxParser.parse_from_file", path))
        explicit = "NetworkDefinitionCreationFlag.EXPLICIT_BATCH" in d.names and (
            self._network._flags >> int(d.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) & 1
        )
        if d.major < 10 and not explicit:  # what TensorRT 8.6's parser does with an implicit-batch network
            self._errors.append("Assertion failed: !mImporterCtx.network()->hasImplicitBatchDimension()")
            return False
        model = onnx.shape_inference.infer_shapes(onnx.load(path))
        elem = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.output)}
        for i, node in enumerate(model.graph.node):
            outs = []
            for o in node.output:
                kind = elem.get(o, onnx.TensorProto.FLOAT)
                if node.op_type == "Constant":
                    attr = node.attribute[0]
                    kind = attr.t.data_type if attr.HasField("t") else kind
                dtype = d.DataType.FLOAT if kind == onnx.TensorProto.FLOAT else d.DataType.INT32
                outs.append(FakeTensor(d, o, dtype))
            self._network._layers.append(FakeLayer(d, node.name or f"(Unnamed Layer* {i})", outs))
        object.__setattr__(self._network, "_outputs", [(o.name, o) for o in model.graph.output])
        return True

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, i: int) -> str:
        return self._errors[i]


class FakeProfile(Guarded):
    _api = "IOptimizationProfile"

    def __init__(self, double: "TensorRTTestDouble") -> None:
        super().__init__(double)
        object.__setattr__(self, "name", "profile")
        object.__setattr__(self, "_shapes", {})

    def set_shape(self, name: str, lo: Tuple[int, ...], opt: Tuple[int, ...], hi: Tuple[int, ...]) -> None:
        self._double.calls.append(("IOptimizationProfile.set_shape", (name, lo, opt, hi)))
        self._shapes[name] = (lo, opt, hi)


class FakeHostMemory(Guarded):
    _api = "IHostMemory"

    def __init__(self, double: "TensorRTTestDouble", data: bytes) -> None:
        super().__init__(double)
        object.__setattr__(self, "name", "memory")
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "nbytes", len(data))

    def __bytes__(self) -> bytes:  # the real IHostMemory is a buffer
        return self._data


class FakeTimingCache(Guarded):
    _api = "ITimingCache"

    def __init__(self, double: "TensorRTTestDouble", data: bytes) -> None:
        super().__init__(double)
        object.__setattr__(self, "name", "timing cache")
        object.__setattr__(self, "_data", data)

    def serialize(self) -> FakeHostMemory:
        self._double.calls.append(("ITimingCache.serialize", None))
        return FakeHostMemory(self._double, self._data + b"+timings")


class FakeConfig(Guarded):
    _api = "IBuilderConfig"

    def __init__(self, double: "TensorRTTestDouble") -> None:
        super().__init__(double)
        object.__setattr__(self, "name", "config")
        object.__setattr__(self, "_flags", set())
        object.__setattr__(self, "_profiles", [])
        object.__setattr__(self, "_cache", None)

    def set_memory_pool_limit(self, pool: Member, size: int) -> None:
        self._double.calls.append(("IBuilderConfig.set_memory_pool_limit", (pool.name, size)))

    def set_flag(self, flag: Member) -> None:
        self._double.calls.append(("IBuilderConfig.set_flag", flag.name))
        self._flags.add(flag.name)

    def clear_flag(self, flag: Member) -> None:
        self._double.calls.append(("IBuilderConfig.clear_flag", flag.name))
        self._flags.discard(flag.name)

    def add_optimization_profile(self, profile: FakeProfile) -> int:
        self._double.calls.append(("IBuilderConfig.add_optimization_profile", dict(profile._shapes)))
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def create_timing_cache(self, data: bytes) -> FakeTimingCache:
        self._double.calls.append(("IBuilderConfig.create_timing_cache", bytes(data)))
        return FakeTimingCache(self._double, bytes(data))

    def set_timing_cache(self, cache: FakeTimingCache, ignore_mismatch: bool) -> bool:
        self._double.calls.append(("IBuilderConfig.set_timing_cache", ignore_mismatch))
        object.__setattr__(self, "_cache", cache)
        return True

    def get_timing_cache(self) -> Optional[FakeTimingCache]:
        self._double.calls.append(("IBuilderConfig.get_timing_cache", None))
        return self._cache


class FakeBuilder(Guarded):
    _api = "Builder"

    def __init__(self, double: "TensorRTTestDouble", logger: Any) -> None:
        super().__init__(double)
        object.__setattr__(self, "name", "builder")
        double.calls.append(("Builder", None))
        if double.fail_factories:
            raise TypeError(NULLPTR)

    def create_network(self, flags: int) -> FakeNetwork:
        d = self._double
        enum = d.NetworkDefinitionCreationFlag
        names = [m.name for m in vars(enum).values() if isinstance(m, Member) and flags >> m.value & 1]
        d.calls.append(("Builder.create_network", sorted(names)))
        return FakeNetwork(d, flags)

    def create_builder_config(self) -> FakeConfig:
        self._double.calls.append(("Builder.create_builder_config", None))
        return FakeConfig(self._double)

    def create_optimization_profile(self) -> FakeProfile:
        return FakeProfile(self._double)

    def build_serialized_network(self, network: FakeNetwork, config: FakeConfig) -> Optional[FakeHostMemory]:
        d = self._double
        pinned = sorted(
            layer.name
            for layer in network._layers
            if "ILayer.precision" in d.names and layer._output_types and layer.precision is d.DataType.FLOAT
        )
        d.calls.append(("Builder.build_serialized_network", {"flags": sorted(config._flags), "pinned": pinned}))
        d.builds += 1
        if d.build_returns_none:
            return None
        outputs = {}
        for name, vi in network._outputs:
            dims = [dim.dim_value for dim in vi.type.tensor_type.shape.dim]
            outputs[name] = dims[1:]
        plan = {"flags": sorted(config._flags), "outputs": outputs, "max_batch": config._profiles[0]._shapes}
        return FakeHostMemory(d, PLAN_MAGIC + json.dumps(plan, default=list).encode())


class FakeContext(Guarded):
    _api = "IExecutionContext"

    def __init__(self, double: "TensorRTTestDouble", engine: "FakeEngine") -> None:
        super().__init__(double)
        object.__setattr__(self, "name", "context")
        object.__setattr__(self, "_engine", engine)
        object.__setattr__(self, "_shapes", {})
        object.__setattr__(self, "_addresses", {})

    def set_input_shape(self, name: str, shape: Tuple[int, ...]) -> bool:
        self._double.calls.append(("IExecutionContext.set_input_shape", (name, shape)))
        if self._double.refuse_input_shape:
            return False
        self._shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, address: int) -> bool:
        self._double.calls.append(("IExecutionContext.set_tensor_address", name))
        self._addresses[name] = address
        return True

    def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
        batch = self._shapes["ground"][0]
        return (batch, *self._engine._plan["outputs"][name])

    def execute_async_v3(self, stream: int) -> bool:
        self._double.calls.append(("IExecutionContext.execute_async_v3", stream))
        for name in self._engine._plan["outputs"]:
            values = np.full(self.get_tensor_shape(name), self._double.output_value, np.float32)
            ctypes.memmove(self._addresses[name], values.ctypes.data, values.nbytes)
        return not self._double.execute_fails


class FakeEngine(Guarded):
    _api = "ICudaEngine"

    def __init__(self, double: "TensorRTTestDouble", plan: Dict[str, Any]) -> None:
        super().__init__(double)
        object.__setattr__(self, "name", "engine")
        object.__setattr__(self, "_plan", plan)
        object.__setattr__(self, "_io", ["ground", "aerial", *plan["outputs"]])
        object.__setattr__(self, "num_io_tensors", len(self._io))

    def get_tensor_name(self, i: int) -> str:
        return self._io[i]

    def get_tensor_mode(self, name: str) -> Member:
        m = self._double.TensorIOMode
        return m.INPUT if name in ("ground", "aerial") else m.OUTPUT

    def get_tensor_dtype(self, name: str) -> Member:
        return self._double.DataType.FLOAT

    def create_execution_context(self) -> Optional[FakeContext]:
        self._double.calls.append(("ICudaEngine.create_execution_context", None))
        return None if self._double.no_context else FakeContext(self._double, self)


class FakeRuntime(Guarded):
    _api = "Runtime"

    def __init__(self, double: "TensorRTTestDouble", logger: Any) -> None:
        super().__init__(double)
        object.__setattr__(self, "name", "runtime")
        double.calls.append(("Runtime", None))
        if double.fail_factories:
            raise TypeError(NULLPTR)

    def deserialize_cuda_engine(self, data: bytes) -> Optional[FakeEngine]:
        d = self._double
        plan = None
        if data.startswith(PLAN_MAGIC) and not d.refuse_every_plan:
            try:
                plan = json.loads(data[len(PLAN_MAGIC) :])
            except ValueError:  # truncated or damaged: TensorRT logs and returns None
                plan = None
        d.calls.append(("Runtime.deserialize_cuda_engine", plan is not None))
        return None if plan is None else FakeEngine(d, plan)


class TensorRTTestDouble:
    """Builds the ``tensorrt`` module double for ``version`` (a fixture name, e.g. "10.3.0");
    ``module`` goes into ``sys.modules["tensorrt"]``. Switches make it fail like the real thing."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.major = int(version.split(".")[0])
        self.names = api_names(version)
        self.calls: List[Tuple[str, Any]] = []
        self.builds = 0
        self.fail_factories = False  # trt.Builder / trt.Runtime raise pybind11's nullptr TypeError
        self.refuse_every_plan = False  # deserialize_cuda_engine returns None for every plan
        self.build_returns_none = False
        self.no_context = False
        self.refuse_input_shape = False
        self.execute_fails = False
        self.output_value = 1.0  # what the "kernel" writes into every output element (nan: a broken FP16 engine)
        for enum in ("BuilderFlag", "DataType", "MemoryPoolType", "NetworkDefinitionCreationFlag", "TensorIOMode"):
            members = sorted(n.split(".", 1)[1] for n in self.names if n.startswith(enum + "."))
            members = [m for m in members if m not in ("name", "value")]
            known = KNOWN_VALUES.get(enum, {})
            ns = types.SimpleNamespace(**{m: Member(enum, m, known.get(m, 100 + i)) for i, m in enumerate(members)})
            setattr(self, enum, ns)
        self.module = self._module()

    def _module(self) -> types.ModuleType:
        m = types.ModuleType("tensorrt", f"test double of tensorrt {self.version}")
        m.__version__ = self.version  # type: ignore[attr-defined]
        logger = types.SimpleNamespace(WARNING="WARNING", ERROR="ERROR", INFO="INFO")

        def make_logger(severity: Any = None) -> Any:
            return types.SimpleNamespace(min_severity=severity)

        make_logger.WARNING = logger.WARNING  # type: ignore[attr-defined]
        items = {
            "Logger": make_logger,
            "Builder": lambda lg: FakeBuilder(self, lg),
            "Runtime": lambda lg: FakeRuntime(self, lg),
            "OnnxParser": lambda net, lg: FakeParser(self, net, lg),
            **{e: getattr(self, e) for e in ("BuilderFlag", "DataType", "MemoryPoolType", "TensorIOMode")},
            "NetworkDefinitionCreationFlag": self.NetworkDefinitionCreationFlag,
        }
        for name, value in items.items():
            assert name in self.names, f"{name} missing from the {self.version} fixture"
            setattr(m, name, value)
        return m

    def called(self, what: str) -> List[Any]:
        """Details of every recorded call to ``what``, in order."""
        return [d for w, d in self.calls if w == what]

    def index(self, what: str) -> int:
        """Position of the first call to ``what`` (ValueError when never called)."""
        return [w for w, _ in self.calls].index(what)


class CpuCudaDouble:
    """Test double of :class:`xview_loc_ros.inference.trt_backend.TorchCuda`: "CUDA" device N is
    the CPU, buffers are CPU tensors; records the device selections in the TensorRT double's calls."""

    def __init__(self, double: TensorRTTestDouble, gpu: Optional[GpuInfo] = None) -> None:
        self.torch = torch
        self.double = double
        self.gpu = gpu or GpuInfo("Test Double GPU", "8.7", 16, "CUDA 12.6, tensorrt-cu12 (test double)")

    def select(self, index: int) -> None:
        self.double.calls.append(("cuda.select", index))

    def info(self, index: int) -> GpuInfo:
        return self.gpu

    def device(self, index: int) -> Any:
        return torch.device("cpu")

    def stream(self, index: int) -> Any:
        return types.SimpleNamespace(cuda_stream=1000 + index, synchronize=lambda: None)

    @contextlib.contextmanager
    def scope(self, stream: Any) -> Iterator[None]:
        self.double.calls.append(("cuda.scope", stream.cuda_stream))
        yield
