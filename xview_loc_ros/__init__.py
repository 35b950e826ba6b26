# SPDX-License-Identifier: Apache-2.0
"""xview_loc_ros: fine-grained cross-view (ground-to-aerial) localization for ROS 2 vehicles.

Importing this package never imports rclpy; only the node module does.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = "xview_loc_ros"


def _version() -> str:
    """The version written once, in package.xml (ROS tooling requires it there; setup.py reads it
    too). A checkout, ``pip install -e`` and ``colcon build --symlink-install`` have package.xml
    beside the sources; a copied install (``colcon build``, ``pip install``) has the distribution's
    metadata, which setup.py took from package.xml."""
    import importlib.metadata
    import xml.etree.ElementTree as ET

    manifest = Path(__file__).resolve().parents[1] / "package.xml"
    if manifest.is_file():
        root = ET.parse(manifest).getroot()
        if root.findtext("name", "").strip() == PACKAGE:  # not another package's manifest beside site-packages
            return root.findtext("version", "").strip()
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _version()
