# SPDX-License-Identifier: Apache-2.0
"""ament_python / pip installation of xview_loc_ros (vehicle node) and offline_adapt (workstation)."""

import xml.etree.ElementTree as ET
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "xview_loc_ros"
# package.xml (required by ROS tooling) is the one place the version is written
VERSION = ET.parse(Path(__file__).resolve().parent / "package.xml").getroot().findtext("version").strip()

ROS_WHEELS = [  # ROS 2 Kilted wheels from PyPI, for machines without a ROS install (Python 3.11)
    "ros-rclpy[fastrtps]",
    "ros-sensor-msgs",
    "ros-geometry-msgs",
    "ros-nav-msgs",
    "ros-std-msgs",
    "ros-visualization-msgs",
    "ros-diagnostic-msgs",
]

setup(
    name=PACKAGE,
    version=VERSION,
    packages=find_packages(
        include=[PACKAGE, f"{PACKAGE}.*", "offline_adapt", "offline_adapt.*", "xview_testbed", "xview_testbed.*"]
    ),
    package_data={"xview_testbed": ["synth/styles/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        # the node's executable where ros2 run / ros2 launch look (<prefix>/lib/<package>), for colcon
        # and pip alike: pip puts console scripts in bin/ and ignores setup.cfg's script_dir
        (f"lib/{PACKAGE}", ["scripts/localizer_node"]),
        (f"share/{PACKAGE}/launch", glob("launch/*launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
    ],
    python_requires=">=3.10",
    # torch is deliberately not listed (nor efficientnet-pytorch, which requires it; both are the
    # [torch] extra): on ROS machines and Jetsons it comes from the vendor build, a vehicle on ONNX
    # Runtime or TensorRT needs none, and a bare "torch" requirement makes pip pull a multi-GB CUDA
    # wheel. The Makefile pins the CPU build before installing the extra.
    install_requires=[
        "numpy",
        "opencv-python-headless",
        "pyproj",
        "pyyaml",
        "requests",
        "tqdm",
        "matplotlib",
        "rosbags",
        "simplejpeg",  # strict JPEG decoding of training frames (xview-adapt extract); the node never imports it
        "onnx",
        "onnxruntime",
    ],
    extras_require={
        "ros": ROS_WHEELS,
        # PyTorch models and training (workstation; a vehicle runs ONNX Runtime or TensorRT without it).
        # efficientnet-pytorch (CCVPE's backbone) requires torch itself, so it lives here too: install
        # your torch build first (CPU, CUDA, NVIDIA's Jetson wheel), then this extra finds it satisfied.
        "torch": ["torch", "efficientnet-pytorch"],
        "dev": [
            "pytest",
            "pytest-timeout",
            "hypothesis",
            "mcap-ros2-support",
            "onnxscript",
            "pmtiles",
            "rasterio",
            "ruff==0.17.6",
            "mypy==2.4.1",
        ],
        "pmtiles": ["pmtiles"],
        "geotiff": ["rasterio"],
        # TensorRT per CUDA major (README, "TensorRT versions"): a bare "tensorrt" resolves to the
        # newest release, a CUDA 13 build that needs a recent driver and has no FP16 builder flag.
        # 10.3 is JetPack 6.1/6.2's; on Jetsons TensorRT comes from JetPack, not from these wheels.
        "trt": ["tensorrt-cu12>=10.3,<11"],  # CUDA 12 driver (>= 525): FP32 and FP16 engines
        "trt-cu13": ["tensorrt-cu13>=10.13,<11"],  # CUDA 13 driver (>= 580): FP32 and FP16 engines
        "trt11": ["tensorrt-cu13>=11,<12"],  # strong typing only: FP32 engines from this project's ONNX
    },
    zip_safe=True,
    maintainer="xview_loc_ros maintainers",
    maintainer_email="maintainers@xview-loc.dev",
    description="Cross-view (ground-to-aerial) fine-grained localization for ROS 2, with self-distillation adaptation",
    license="Apache-2.0",
    classifiers=["License :: OSI Approved :: Apache Software License"],
    entry_points={
        "console_scripts": [
            "xview-loc = xview_testbed.cli:main",
            "xview-adapt = offline_adapt.cli:main",
        ],
    },
)
