"""The ``input_qos`` parameter string -> an rclpy QoS profile.

``SENSOR_DATA`` (best effort, keep last 5, volatile), ``SYSTEM_DEFAULT``, ``DEFAULT`` (reliable,
keep last 10), ``RELIABLE``, ``BEST_EFFORT``; a ``_<depth>`` suffix overrides the history depth
(``SENSOR_DATA_1`` = keep only the newest message, as Autoware does for camera inputs).
A best-effort subscription receives from reliable and best-effort publishers alike; a reliable one
receives nothing from a best-effort publisher.
"""

from __future__ import annotations

import re

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data,
                       qos_profile_system_default)

from mv4d_core.pipeline.config import QOS_PATTERN, ConfigError


def qos_from_string(value: str, parameter: str = "input_qos") -> QoSProfile:
    m = re.match(QOS_PATTERN, value)
    if not m:
        raise ConfigError(parameter, f"{value!r} does not match {QOS_PATTERN}")
    base, depth = m.group(1), m.group(2)
    if base == "SENSOR_DATA":
        profile = QoSProfile(history=qos_profile_sensor_data.history, depth=qos_profile_sensor_data.depth,
                             reliability=qos_profile_sensor_data.reliability,
                             durability=qos_profile_sensor_data.durability)
    elif base == "SYSTEM_DEFAULT":
        profile = QoSProfile(history=qos_profile_system_default.history, depth=qos_profile_system_default.depth,
                             reliability=qos_profile_system_default.reliability,
                             durability=qos_profile_system_default.durability)
    elif base == "BEST_EFFORT":
        profile = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.BEST_EFFORT,
                             durability=DurabilityPolicy.VOLATILE)
    else:  # DEFAULT, RELIABLE
        profile = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
    if depth:
        profile.history = HistoryPolicy.KEEP_LAST
        profile.depth = int(depth[1:])
    return profile


def output_qos() -> QoSProfile:
    """RELIABLE, keep last 1, volatile (as nvblox): RViz's default Reliable displays receive it."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def static_tf_qos() -> QoSProfile:
    """``/tf_static``: TRANSIENT_LOCAL + RELIABLE so a late joiner still gets the latched transforms."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
