# SPDX-License-Identifier: Apache-2.0
"""Every ``trt.X.Y`` name the code uses exists in each supported TensorRT version that reaches it.

The fixtures ``test/data/trt_api/<version>.txt`` are ``dir()`` of the real binding modules from
PyPI's wheels, imported against stub NVIDIA libraries (tools/trt_api_fixtures.py). This test walks
the source of every module that imports tensorrt, collects each attribute chain rooted at the name
``trt`` (the module, by the project's convention: ``import tensorrt as trt`` or a ``trt`` parameter),
and works out which major versions reach it from the enclosing ``if major <op> N:`` gates (``and``
with other conditions narrows; an ``else`` of a plain major comparison takes the complement). Each
chain must exist in every fixture whose major is in that range. Attributes of objects TensorRT
returns (``layer.precision``) are checked by the test double, which only has the fixture's names
(test_inference_trt_double.py).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from trt_double import api_names, api_versions

from xview_loc_ros.inference.trt_backend import MAX_TENSORRT_EXCLUSIVE, MIN_TENSORRT, check_version

ROOT = Path(__file__).resolve().parents[1]
Range = Tuple[int, int]  # majors lo <= m < hi
ALL: Range = (0, 1000)
OPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "=="}


def major_range(test: ast.expr) -> Tuple[Range, bool]:
    """(majors for which ``test`` can be true, whether the test is exactly a major comparison)."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        lo, hi = ALL
        for v in test.values:
            (a, b), _ = major_range(v)
            lo, hi = max(lo, a), min(hi, b)
        return (lo, hi), False
    if (
        isinstance(test, ast.Compare)
        and len(test.ops) == 1
        and type(test.ops[0]) in OPS
        and isinstance(test.comparators[0], ast.Constant)
        and isinstance(test.comparators[0].value, int)
        and (ast.unparse(test.left).split(".")[-1] == "major")
    ):
        n = test.comparators[0].value
        op = OPS[type(test.ops[0])]
        return {"<": (0, n), "<=": (0, n + 1), ">": (n + 1, 1000), ">=": (n, 1000), "==": (n, n + 1)}[op], op != "=="
    return ALL, False


def complement(r: Range) -> Range:
    """The complement of a one-sided range (a plain ``major < N`` or ``major >= N``)."""
    return (r[1], 1000) if r[0] == 0 else (0, r[0])


def trt_chains(tree: ast.AST) -> List[Tuple[str, int, Range]]:
    """(dotted chain after ``trt.``, line, major range) for every maximal ``trt.X[.Y...]``."""
    found: List[Tuple[str, int, Range]] = []

    def chain(node: ast.Attribute) -> Optional[str]:
        parts = []
        cur: ast.expr = node
        while isinstance(cur, ast.Attribute):
            parts.append(cur.attr)
            cur = cur.value
        return ".".join(reversed(parts)) if isinstance(cur, ast.Name) and cur.id == "trt" else None

    def visit(node: ast.AST, rng: Range) -> None:
        if isinstance(node, (ast.If, ast.IfExp)):
            cond, exact = major_range(node.test)
            visit(node.test, rng)
            inner = (max(rng[0], cond[0]), min(rng[1], cond[1]))
            other = complement(cond) if exact else ALL
            outer = (max(rng[0], other[0]), min(rng[1], other[1]))
            for child in node.body if isinstance(node.body, list) else [node.body]:
                visit(child, inner)
            for child in node.orelse if isinstance(node.orelse, list) else [node.orelse]:
                visit(child, outer)
            return
        if isinstance(node, ast.Attribute):
            name = chain(node)
            if name is not None:
                found.append((name, node.lineno, rng))
                return  # the maximal chain only
        for child in ast.iter_child_nodes(node):
            visit(child, rng)

    visit(tree, ALL)
    return found


def modules_using_tensorrt() -> List[Path]:
    files = [p for pkg in ("xview_loc_ros", "offline_adapt") for p in sorted((ROOT / pkg).rglob("*.py"))]
    return [p for p in files if "import tensorrt" in p.read_text()]


def missing_names(source: str, versions: Dict[str, set]) -> List[str]:
    """'line N: trt.X.Y missing in V' for every chain absent from a version that reaches it."""
    out = []
    for name, line, (lo, hi) in trt_chains(ast.parse(source)):
        parts = name.split(".")
        probe = ".".join(parts[:2])  # the fixtures list top-level names and Class.member
        for v, names in versions.items():
            major = int(v.split(".")[0])
            if lo <= major < hi and (parts[0] not in names or probe not in names):
                out.append(f"line {line}: trt.{name} missing in TensorRT {v}")
    return out


FIXTURES = {v: api_names(v) for v in api_versions()}


def test_fixtures_cover_each_supported_major():
    majors = {int(v.split(".")[0]) for v in FIXTURES}
    assert {8, 10, 11} <= majors
    for v in FIXTURES:  # every fixture's version is one the backend accepts
        assert MIN_TENSORRT <= check_version(v) < MAX_TENSORRT_EXCLUSIVE


def test_fixtures_say_what_the_gates_assume():
    """The API facts the version gates rest on, as the real modules state them."""
    by_major = {int(v.split(".")[0]): names for v, names in FIXTURES.items()}
    assert "NetworkDefinitionCreationFlag.STRONGLY_TYPED" not in by_major[8]
    assert "NetworkDefinitionCreationFlag.EXPLICIT_BATCH" in by_major[8]
    for n in ("BuilderFlag.FP16", "BuilderFlag.OBEY_PRECISION_CONSTRAINTS", "ILayer.precision"):
        assert n in by_major[10] and n in by_major[8] and n not in by_major[11], n
    assert "ILayer.set_output_type" not in by_major[11]
    assert "NetworkDefinitionCreationFlag.STRONGLY_TYPED" in by_major[11]
    assert "NetworkDefinitionCreationFlag.EXPLICIT_BATCH" not in by_major[11]


@pytest.mark.parametrize("path", modules_using_tensorrt(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_trt_name_exists_in_each_version_that_reaches_it(path):
    chains = trt_chains(ast.parse(path.read_text()))
    assert chains or path.name != "trt_backend.py"
    assert not missing_names(path.read_text(), FIXTURES)


def test_the_checker_fails_an_ungated_name_and_respects_gates():
    assert "trt_backend.py" in {p.name for p in modules_using_tensorrt()}
    ungated = "def f(trt, c):\n    c.set_flag(trt.BuilderFlag.FP16)\n"
    assert [m for m in missing_names(ungated, FIXTURES) if "11.4" in m] == [
        "line 2: trt.BuilderFlag.FP16 missing in TensorRT 11.4.0.106"
    ]
    gated = (
        "def f(trt, c, major, fp16):\n"
        "    if fp16 and major < 11:\n"
        "        c.set_flag(trt.BuilderFlag.FP16)\n"
        "    if major >= 11:\n"
        "        pass\n"
        "    else:\n"
        "        x = trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH if major < 10 else 0\n"
    )
    assert missing_names(gated, FIXTURES) == []
    wrong_gate = (
        "def f(trt, major):\n    if major >= 10:\n        return trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED\n"
    )
    assert missing_names(wrong_gate, FIXTURES) == []  # 10.x has it too
    too_wide = (
        "def f(trt, major):\n    if major >= 8:\n        return trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED\n"
    )
    assert missing_names(too_wide, FIXTURES) == [
        "line 3: trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED missing in TensorRT 8.6.1"
    ]
    typo = "def f(trt):\n    return trt.Logger.WARN\n"
    assert len(missing_names(typo, FIXTURES)) == len(FIXTURES)
