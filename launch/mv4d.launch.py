"""mv4d perception on the vehicle: the node with the shipped parameters and driver topic remaps.

    ros2 launch mv4d mv4d.launch.py rig_file:=/path/rig.yaml checkpoint:=/path/model.pt

Camera topics are remapped from ``~/input/<cam>/image`` to ``/<cam>/image_raw`` (or
``/<cam>/image_raw/compressed``), ``~/input/<cam>/camera_info`` to ``/<cam>/camera_info`` and
``~/input/lidar`` to ``/lidar/points`` (the layout ``mv4d synth`` / ``TopicMap.default`` write)
and ``~/input/odometry`` to ``/odom`` (``odometry_topic:=``), for the cameras listed in the
parameter file. ``rig_file`` / ``checkpoint`` / ``use_odometry`` override the parameter file only
when given (``use_odometry:=true`` turns temporal fusion on).

``lifecycle:=true`` runs the managed node (``perception_node --lifecycle``) as a ``LifecycleNode``:
with ``autostart:=true`` (default) this launch file configures it and, once it is inactive,
activates it; ``autostart:=false`` leaves the transitions to a lifecycle manager (or
``ros2 lifecycle set /mv4d_perception configure|activate``).
"""

from __future__ import annotations

import os

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "mv4d"
NODE_NAME = "mv4d_perception"


def camera_names_from(param_file: str) -> list[str]:
    with open(param_file, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    for key in (NODE_NAME, f"/{NODE_NAME}", "/**"):
        params = (data.get(key) or {}).get("ros__parameters")
        if params and "camera_names" in params:
            return list(params["camera_names"])
    raise RuntimeError(f"{param_file}: no camera_names under ros__parameters")


def topic_remaps(camera_names: list[str], compressed: bool, lidar_topic: str,
                 odometry_topic: str = "/odom") -> list[tuple[str, str]]:
    suffix = "/image_raw/compressed" if compressed else "/image_raw"
    remaps = []
    for cam in camera_names:
        remaps.append((f"~/input/{cam}/image", f"/{cam}{suffix}"))
        remaps.append((f"~/input/{cam}/camera_info", f"/{cam}/camera_info"))
    remaps.append(("~/input/lidar", lidar_topic))
    remaps.append(("~/input/odometry", odometry_topic))
    return remaps


def perception_node(context) -> list:
    """The node action, built once the launch arguments are known."""
    param_file = LaunchConfiguration("param_file").perform(context)
    overrides = {"use_sim_time": LaunchConfiguration("use_sim_time").perform(context).lower() == "true"}
    for name in ("rig_file", "checkpoint"):
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    use_odometry = LaunchConfiguration("use_odometry").perform(context).lower()
    if use_odometry in ("true", "false"):
        overrides["use_odometry"] = use_odometry == "true"
    elif use_odometry:
        raise RuntimeError(f"launch argument use_odometry: expected true, false or empty, got {use_odometry!r}")
    compressed = LaunchConfiguration("compressed").perform(context).lower() == "true"
    if compressed:
        overrides["image_transport"] = "compressed"
    lidar_topic = LaunchConfiguration("lidar_topic").perform(context)
    odometry_topic = LaunchConfiguration("odometry_topic").perform(context)
    remaps = topic_remaps(camera_names_from(param_file), compressed, lidar_topic, odometry_topic)
    lifecycle = _bool_argument(context, "lifecycle")
    if not lifecycle:
        return [Node(package=PACKAGE, executable="perception_node", name=NODE_NAME, output="screen",
                     parameters=[param_file, overrides], remappings=remaps)]
    return lifecycle_node(param_file, overrides, remaps, _bool_argument(context, "autostart"))


def _bool_argument(context, name: str) -> bool:
    value = LaunchConfiguration(name).perform(context).lower()
    if value not in ("true", "false"):
        raise RuntimeError(f"launch argument {name}: expected true or false, got {value!r}")
    return value == "true"


def lifecycle_node(param_file: str, overrides: dict, remaps: list, autostart: bool) -> list:
    """The managed node, plus (``autostart``) the configure event and the activate-once-inactive handler."""
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.events import matches_action
    from launch_ros.actions import LifecycleNode
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    node = LifecycleNode(package=PACKAGE, executable="perception_node", name=NODE_NAME, namespace="",
                         output="screen", arguments=["--lifecycle"], parameters=[param_file, overrides],
                         remappings=remaps)
    if not autostart:
        return [node]
    configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                            transition_id=Transition.TRANSITION_CONFIGURE))
    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, goal_state="inactive",
        entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                              transition_id=Transition.TRANSITION_ACTIVATE))]))
    return [node, activate, configure]


def common_arguments(use_sim_time_default: str) -> list:
    share = get_package_share_directory(PACKAGE)
    return [
        DeclareLaunchArgument("param_file", default_value=os.path.join(share, "config", "mv4d.param.yaml"),
                              description="ROS parameter file of the perception node"),
        DeclareLaunchArgument("rig_file", default_value="",
                              description="rig YAML (overrides the parameter file when given)"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="model checkpoint (overrides the parameter file when given)"),
        DeclareLaunchArgument("compressed", default_value="false",
                              description="subscribe sensor_msgs/CompressedImage on /<cam>/image_raw/compressed"),
        DeclareLaunchArgument("lidar_topic", default_value="/lidar/points", description="PointCloud2 input"),
        DeclareLaunchArgument("odometry_topic", default_value="/odom",
                              description="nav_msgs/Odometry input (base_link pose), used with use_odometry"),
        DeclareLaunchArgument("use_odometry", default_value="",
                              description="true/false: temporal fusion from odometry (empty: the parameter file's)"),
        DeclareLaunchArgument("use_sim_time", default_value=use_sim_time_default,
                              description="use /clock (true when replaying bags)"),
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="true: the managed (lifecycle) node instead of the plain one"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="with lifecycle:=true, configure and activate it at launch "
                                          "(false: leave the transitions to a lifecycle manager)"),
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([*common_arguments("false"), OpaqueFunction(function=perception_node)])
