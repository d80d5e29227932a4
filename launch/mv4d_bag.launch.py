"""mv4d perception on a recorded bag: sim time, the node, optional ``ros2 bag play`` and RViz.

    ros2 launch mv4d mv4d_bag.launch.py bag:=out/synth/bag rig_file:=rig.yaml rviz:=true

``use_sim_time`` defaults to true and the bag is played with ``--clock`` so outputs carry the
bag's stamps and latency is measured in bag time. ``/tf_static`` is latched in the bag
(TRANSIENT_LOCAL); start the node before or together with playback.
"""

from __future__ import annotations

import importlib.util
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node

PACKAGE = "mv4d"


def _vehicle_launch():
    """The sibling ``mv4d.launch.py`` (launch files are not importable modules)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mv4d.launch.py")
    spec = importlib.util.spec_from_file_location("mv4d_vehicle_launch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generate_launch_description() -> LaunchDescription:
    vehicle = _vehicle_launch()
    share = get_package_share_directory(PACKAGE)
    bag = LaunchConfiguration("bag")
    play = ExecuteProcess(
        cmd=["ros2", "bag", "play", bag, "--clock", "--rate", LaunchConfiguration("rate")],
        output="screen", condition=IfCondition(PythonExpression(["'", bag, "' != ''"])))
    rviz = Node(package="rviz2", executable="rviz2", name="rviz2", output="log",
                arguments=["-d", LaunchConfiguration("rviz_config")],
                parameters=[{"use_sim_time": True}], condition=IfCondition(LaunchConfiguration("rviz")))
    return LaunchDescription([
        *vehicle.common_arguments("true"),
        DeclareLaunchArgument("bag", default_value="", description="rosbag2 folder to play (empty: play it yourself)"),
        DeclareLaunchArgument("rate", default_value="1.0", description="ros2 bag play --rate"),
        DeclareLaunchArgument("rviz", default_value="false", description="start RViz with config/mv4d.rviz"),
        DeclareLaunchArgument("rviz_config", default_value=os.path.join(share, "config", "mv4d.rviz"),
                              description="RViz configuration"),
        OpaqueFunction(function=vehicle.perception_node),
        play,
        rviz,
    ])
