"""mv4d_core: label-free 4D scene understanding for surround-camera rigs.

The library never imports rclpy: every ROS message it touches is read and
written by field name, so rosbags dataclasses and rclpy messages both work.
"""

__version__ = "0.1.0"
