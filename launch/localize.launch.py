# SPDX-License-Identifier: Apache-2.0
"""Launch the cross-view localizer node (and optionally RViz 2 with the heat-map view).

    ros2 launch xview_loc_ros localize.launch.py model_path:=/path/student.onnx tile_source:=mbtiles:/maps/city.mbtiles
    ros2 launch xview_loc_ros localize.launch.py params_file:=/my/localizer.yaml rviz:=false use_sim_time:=true

``model_path`` and ``tile_source`` override the params file when given (empty = keep the file's).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def _localizer(context, *args, **kwargs):
    overrides = {"use_sim_time": LaunchConfiguration("use_sim_time").perform(context).lower() == "true"}
    for name in ("model_path", "tile_source"):
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    return [
        Node(
            package="xview_loc_ros",
            executable="localizer_node",
            name="xview_localizer",
            output="screen",
            parameters=[LaunchConfiguration("params_file"), overrides],
        )
    ]


def generate_launch_description():
    share = get_package_share_directory("xview_loc_ros")
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "params_file",
                default_value=os.path.join(share, "config", "localizer.yaml"),
                description="parameters YAML (keyed by xview_localizer, then ros__parameters)",
            ),
            DeclareLaunchArgument(
                "model_path",
                default_value="",
                description="model file (.pt checkpoint, .onnx, TensorRT engine); empty = from params_file",
            ),
            DeclareLaunchArgument(
                "tile_source",
                default_value="",
                description="aerial tiles: xyz:DIR, mbtiles:FILE, https://host/{z}/{x}/{y}.png; empty = from params_file",
            ),
            DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag playback)"),
            DeclareLaunchArgument("rviz", default_value="true", description="start RViz 2 with the heat-map view"),
            OpaqueFunction(function=_localizer),
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=["-d", os.path.join(share, "config", "localize.rviz")],
                parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
                condition=IfCondition(LaunchConfiguration("rviz")),
            ),
        ]
    )
