# SPDX-License-Identifier: Apache-2.0
"""Launch the cross-view localizer node (and, on a desktop, RViz 2 with the heat-map view).

    ros2 launch xview_loc_ros localize.launch.py model_path:=/path/student.onnx tile_source:=mbtiles:/maps/city.mbtiles
    ros2 launch xview_loc_ros localize.launch.py params_file:=/my/localizer.yaml rviz:=true use_sim_time:=true

``model_path`` and ``tile_source`` override the params file when given (empty = keep the file's).
The decisions live in ``xview_loc_ros.launch_logic`` (tested without ROS); this file only wires them.
"""

import os

from ament_index_python.packages import get_package_prefix, get_package_share_directory
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from xview_loc_ros.launch_logic import localizer_parameters, node_overrides, rviz_plan


def _nodes(context, *args, **kwargs):
    # every check runs before the first process starts: a refused launch leaves nothing running
    arg = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    parameters = localizer_parameters(arg["params_file"], arg["use_sim_time"], arg["model_path"], arg["tile_source"])
    rviz = rviz_plan(arg["rviz"], get_package_prefix)
    actions = [
        Node(
            package="xview_loc_ros",
            executable="localizer_node",
            name="xview_localizer",
            output="screen",
            parameters=parameters,
            # the launch exists for the localizer: when it stops (e.g. refused parameters), stop the rest
            on_exit=Shutdown(reason="xview_localizer exited"),
        )
    ]
    if rviz.warning:
        actions.append(LogInfo(msg="WARNING: " + rviz.warning))
    if rviz.start:
        share = get_package_share_directory("xview_loc_ros")
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=["-d", os.path.join(share, "config", "localize.rviz")],
                parameters=[node_overrides(arg["use_sim_time"])],
            )
        )
    return actions


ARGUMENTS = {
    "params_file": "parameters YAML (keyed by xview_localizer, then ros__parameters); a missing or wrong file stops the launch",
    "model_path": "model file (.pt checkpoint, .onnx, TensorRT engine); empty = from params_file",
    "tile_source": "aerial tiles: xyz:DIR, mbtiles:FILE, https://host/{z}/{x}/{y}.png; empty = from params_file",
    "use_sim_time": "use /clock (bag playback)",
    "rviz": "start RViz 2 with the heat-map view (skipped with a warning when rviz2 is not installed)",
}


def generate_launch_description():
    share = get_package_share_directory("xview_loc_ros")
    defaults = {
        "params_file": os.path.join(share, "config", "localizer.yaml"),
        "model_path": "",
        "tile_source": "",
        "use_sim_time": "false",
        "rviz": "false",  # vehicles run ros-base, without rviz2
    }
    return LaunchDescription(
        [
            DeclareLaunchArgument(name, default_value=defaults[name], description=text)
            for name, text in ARGUMENTS.items()
        ]
        + [OpaqueFunction(function=_nodes)]
    )
