# SPDX-License-Identifier: Apache-2.0
"""The node's parameters over real DDS, through rclpy's parameter services from a second node:
descriptors (what ``ros2 param describe`` prints), run-time changes applied, bad ones refused with a
reason naming the parameter, restart-only ones read-only."""

from __future__ import annotations

import time

import pytest
import rclpy
from localizer_testbed import LAT, LON, panorama, write_small_checkpoint, write_tiles
from node_harness import Harness, fix_msg, imu_msg, jpeg_msg
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import DescribeParameters, SetParameters, SetParametersAtomically
from rclpy.parameter import Parameter

from xview_loc_ros.node import LocalizerNode
from xview_loc_ros.params import LocalizerParams, ParameterError, param_info, runtime_parameters

T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    d = tmp_path_factory.mktemp("params")
    ckpt = write_small_checkpoint(d / "small.pt")
    tiles = write_tiles(d / "tiles", radius=2)
    rclpy.init()
    params = {
        "model_path": str(ckpt),
        "tile_source": f"xyz:{tiles}",
        "backend": "torch",
        "device": "cpu",
        "threads": 1,
        "gate_chi2": 1e9,
        "min_confidence": 0.0,
        "max_ambiguity": 1e9,
        "diagnostics_period_s": 0.3,
        "prefetch_ahead_s": 0.0,
        "fusion": "filter",
    }
    h = Harness(params)
    yield h
    h.close()
    rclpy.shutdown()


def _call(h, srv_type, name, request):
    client = h.tester.create_client(srv_type, f"/xview_localizer/{name}")
    try:
        assert client.wait_for_service(timeout_sec=10.0), name
        future = client.call_async(request)
        assert h.wait_for(future.done, 10.0), name
        return future.result()
    finally:
        h.tester.destroy_client(client)


def _describe(h, *names):
    return _call(
        h, DescribeParameters, "describe_parameters", DescribeParameters.Request(names=list(names))
    ).descriptors


def _set(h, **values):
    msgs = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
    return _call(h, SetParameters, "set_parameters", SetParameters.Request(parameters=msgs)).results


def test_every_parameter_is_described_with_unit_range_and_read_only(node):
    names = list(LocalizerParams().to_dict())
    descs = {d.name: d for d in _describe(node, *names)}
    assert set(descs) == set(names)
    for name, d in descs.items():
        info = param_info(name)
        assert d.description.startswith(info.description) and d.description, name
        if info.unit:
            assert d.description.endswith(f"[{info.unit}]"), name
        assert d.read_only == (not info.runtime), name
    gate = descs["gate_chi2"]
    assert "Mahalanobis" in gate.description and not gate.read_only
    assert gate.floating_point_range[0].from_value == 0.0 and gate.floating_point_range[0].to_value > 1e300
    zoom = descs["tile_zoom"]
    assert (zoom.integer_range[0].from_value, zoom.integer_range[0].to_value) == (-1, 24) and zoom.read_only
    cell = descs["filter_cell_m"]
    assert cell.read_only and cell.description.endswith("[m]") and "restart" in cell.additional_constraints
    assert descs["viz_max_rate_hz"].floating_point_range[0].to_value == 1000.0
    assert {"gate_chi2", "heatmap_temperature", "viz_max_rate_hz", "min_confidence"} <= set(runtime_parameters())


def test_runtime_changes_apply_to_the_localizer_and_the_filter(node):
    h = node
    results = _set(h, gate_chi2=20.0, heatmap_temperature=0.5, viz_max_rate_hz=2)  # an integer for a float
    assert all(r.successful for r in results), [r.reason for r in results]
    assert h.node.params.gate_chi2 == 20.0 and h.node.loc.params.gate_chi2 == 20.0
    assert h.node.loc.filter.p.heatmap_temperature == 0.5
    assert h.node.params.viz_max_rate_hz == 2.0 and isinstance(h.node.params.viz_max_rate_hz, float)
    assert h.node.get_parameter("gate_chi2").value == 20.0
    # the effect on frames: an impossible gate after the change gates the next frames
    assert all(r.successful for r in _set(h, gate_chi2=1e-9))
    for i in range(3):
        t = T0 + 0.1 * i
        h.publish("fix", fix_msg(t, LAT, LON))
        h.publish("imu", imu_msg(t, 0.0))
        time.sleep(0.1)
        h.publish("jpeg", jpeg_msg(t, panorama(i)))
        time.sleep(0.5)
    assert h.wait_for(lambda: h.node.diagnostics_values().get("reject_gnss_gate", 0) >= 1, 15.0), (
        h.node.diagnostics_values()
    )
    assert all(r.successful for r in _set(h, gate_chi2=1e9))


@pytest.mark.parametrize(
    "name, value, reason",
    [
        ("max_ambiguity", 0.0, "parameter 'max_ambiguity': must be > 0"),  # in the range, refused by validate()
        ("gate_chi2", "wide", "parameter 'gate_chi2': expected a finite float"),  # dynamic typing lets it in
        ("gate_chi2", -1.0, "gate_chi2"),  # outside the descriptor's range: rclpy refuses
        ("min_confidence", 1.5, "min_confidence"),
        ("filter_cell_m", 1.0, "filter_cell_m"),  # read-only: needs a restart
        ("model_path", "/other.onnx", "model_path"),
        ("filter_lost_updates", 0, "filter_lost_updates"),
    ],
)
def test_bad_changes_are_refused_naming_the_parameter(node, name, value, reason):
    before = node.node.get_parameter(name).value
    (result,) = _set(node, **{name: value})
    assert not result.successful and reason in result.reason, result.reason
    assert node.node.get_parameter(name).value == before and getattr(node.node.params, name) == before


def test_a_refused_change_in_a_batch_leaves_all_unchanged(node):
    req = [
        Parameter("min_confidence", value=0.2).to_parameter_msg(),
        ParameterMsg(name="max_ambiguity"),
    ]
    req[1].value.type = ParameterType.PARAMETER_DOUBLE
    req[1].value.double_value = -3.0
    res = _call(
        node, SetParametersAtomically, "set_parameters_atomically", SetParametersAtomically.Request(parameters=req)
    ).result
    assert not res.successful and "max_ambiguity" in res.reason
    assert node.node.params.min_confidence == 0.0 and node.node.get_parameter("min_confidence").value == 0.0


def test_an_override_outside_the_documented_range_stops_the_start_naming_it(node):
    overrides = [Parameter(k, value=v) for k, v in dict(node.node.params.to_dict(), tile_zoom=30).items()]
    with pytest.raises(ParameterError, match="parameter 'tile_zoom'"):
        LocalizerNode("xview_localizer_bad_zoom", parameter_overrides=overrides)
