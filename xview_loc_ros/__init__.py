"""xview_loc_ros: fine-grained cross-view (ground-to-aerial) localization for ROS 2 vehicles.

Importing this package never imports rclpy; only the node module does.
"""
__version__ = "0.1.0"
