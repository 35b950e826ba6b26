# SPDX-License-Identifier: Apache-2.0
"""Write ``test/data/trt_api/<version>.txt``: the TensorRT Python API names of real binding wheels.

The TensorRT binding wheels on PyPI (``tensorrt-cu12-bindings``, ``tensorrt-cu13-bindings``,
``tensorrt-bindings``) hold one compiled module, ``tensorrt_bindings/tensorrt.so``, that cannot be
imported without libnvinfer, libnvonnxparser and libnvinfer_plugin (gigabytes, and CUDA). The
module's import only *links* against those libraries: pybind11 registers every class, method and enum
member from the module's own code. This script therefore

1. downloads one wheel per version (``pip download --no-deps``, for this interpreter's ABI),
2. lists the symbols ``tensorrt.so`` takes from the NVIDIA libraries (``nm -D --undefined-only``),
3. compiles stub libraries with those symbols and the sonames it needs (``readelf -d``), every stub
   returning 0 (never called: creating a Builder would return None, which we never do here),
4. imports the real module against the stubs in a child process and writes ``dir()`` of the module
   and of the classes the backend touches (``API_CLASSES``) to a small text fixture.

The fixtures are exact (what ``dir()`` says), not a string scan of the binary. Needs gcc, nm,
readelf, pip and network access to PyPI; run from the repository root::

    python tools/trt_api_fixtures.py                      # the default versions
    python tools/trt_api_fixtures.py tensorrt-cu12-bindings==10.8.0.43
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "test" / "data" / "trt_api"
DEFAULT_WHEELS = (
    "tensorrt-bindings==8.6.1",  # the last 8.x on PyPI (JetPack 6.0 ships 8.6.2)
    "tensorrt-cu12-bindings==10.3.0",  # JetPack 6.1 / 6.2
    "tensorrt-cu12-bindings==10.16.1.11",  # the newest 10.x on PyPI when written
    "tensorrt-cu13-bindings==11.4.0.106",  # 11.x: strong typing only
)
# Classes whose members the backend uses (directly, or on objects they return); the module's top
# level names are always written. Kept short so the fixtures stay small.
API_CLASSES = (
    "Builder",
    "BuilderFlag",
    "DataType",
    "IBuilderConfig",
    "ICudaEngine",
    "IExecutionContext",
    "IHostMemory",
    "ILayer",
    "INetworkDefinition",
    "IOptimizationProfile",
    "ITensor",
    "ITimingCache",
    "Logger",
    "MemoryPoolType",
    "NetworkDefinitionCreationFlag",
    "OnnxParser",
    "Runtime",
    "TensorIOMode",
)
# Run in the child process, against the stub libraries.
DUMP = r"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("tensorrt", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
out = sorted(n for n in dir(m) if not n.startswith("_"))
for cls in sys.argv[2:]:
    if hasattr(m, cls):
        out += sorted(f"{cls}.{n}" for n in dir(getattr(m, cls)) if not n.startswith("_"))
print("\n".join(out))
"""


def run(cmd: List[str], **kw) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def stub_libraries(so: Path, folder: Path) -> None:
    """Compile one stub per NVIDIA soname ``so`` needs, each defining every symbol it imports."""
    needed = re.findall(r"\[(libnv[^\]]+)\]", run(["readelf", "-d", str(so)]))
    this_process = ctypes.CDLL(None)
    symbols = []
    for line in run(["nm", "-D", "--undefined-only", str(so)]).splitlines():
        kind, name = line.split()[-2:]
        if kind != "U" or "@" in name or name.startswith(("Py", "_Py")):
            continue
        if hasattr(this_process, name):  # libc / libdl / libstdc++ provide it
            continue
        symbols.append(name)
    src = folder / "stub.c"
    # every stub is a function returning 0: the import registers names, it never calls them
    src.write_text("".join(f"void *{s}(void) {{ return 0; }}\n" for s in symbols))
    for soname in needed:
        run(["gcc", "-shared", "-fPIC", "-o", str(folder / soname), f"-Wl,-soname,{soname}", str(src)])


def fixture_for(spec: str, work: Path) -> Path:
    """Download ``spec``'s wheel, import its module against stubs, write the fixture; its path."""
    wheels = work / "wheels"
    run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels), spec])
    name, version = spec.split("==")
    dist = name.replace("-", "_")
    wheel = next(p for p in sorted(wheels.glob(f"{dist}-{version}*.whl")))
    unpacked = work / wheel.stem
    with zipfile.ZipFile(wheel) as z:
        z.extractall(unpacked)
    so = next(unpacked.rglob("tensorrt*.so"))
    init = (so.parent / "__init__.py").read_text()
    full_version = re.search(r'__version__\s*=\s*"([^"]+)"', init)
    trt_version = full_version.group(1) if full_version else version
    stubs = work / f"stubs-{trt_version}"
    stubs.mkdir()
    stub_libraries(so, stubs)
    names = run(
        [sys.executable, "-c", DUMP, str(so), *API_CLASSES],
        env={"LD_LIBRARY_PATH": str(stubs), "PATH": "/usr/bin:/bin"},
    ).split()
    # __version__ lives in the wheel's __init__.py, not in the compiled module
    names = sorted(set(names) | {"__version__"})
    out = OUT_DIR / f"{trt_version}.txt"
    header = [
        f"# TensorRT {trt_version} Python API names: dir() of the real module from {wheel.name}",
        f"# (sha256 {hashlib.sha256(wheel.read_bytes()).hexdigest()}), imported against stub",
        "# NVIDIA libraries by tools/trt_api_fixtures.py. Top-level names, then Class.member for the",
        f"# classes the backend touches ({', '.join(API_CLASSES)}).",
    ]
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(header + names) + "\n")
    return out


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("wheels", nargs="*", default=list(DEFAULT_WHEELS), help="pip requirement(s) NAME==VERSION")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as td:
        for spec in args.wheels:
            print(f"wrote {fixture_for(spec, Path(td)).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
