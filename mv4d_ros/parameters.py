"""Strict, described ROS parameters from the parameter table (``mv4d_core.pipeline.config``).

Every parameter is declared read-only with a descriptor that carries its type, range and
description (``ros2 param describe /mv4d_perception sync.slop_s`` shows them), and every value is
checked by the table's own rule first, so the message names the parameter and the limit.

An override the node does not declare (``-p sync.slopp_s:=0.1``, ``use_lidr:`` in a parameter file)
is a typo: rclpy would ignore it silently, here it refuses to start, naming the closest known name.
An integer given for a floating-point parameter (``-p sync.slop_s:=1``) is taken as that number, as
the table allows.
"""

from __future__ import annotations

import math
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.parameter import Parameter

from mv4d_core.pipeline.config import (PARAMETERS, ConfigError, ParamSpec, PerceptionConfig, check_parameter,
                                       limits_text, unknown_parameter_problem)

#: Parameters rclpy itself declares or reads; never typos.
ROS_OWN = ("use_sim_time", "start_type_description_service")
ROS_OWN_PREFIXES = ("qos_overrides.",)

_TYPES = {"bool": ParameterType.PARAMETER_BOOL, "int": ParameterType.PARAMETER_INTEGER,
          "float": ParameterType.PARAMETER_DOUBLE, "str": ParameterType.PARAMETER_STRING,
          "str_list": ParameterType.PARAMETER_STRING_ARRAY}
_INT_LIMIT = 2 ** 63 - 1


def descriptor(spec: ParamSpec, read_only: bool = True) -> ParameterDescriptor:
    """Descriptor of one table entry: type, description, range, constraints in words."""
    d = ParameterDescriptor(name=spec.name, type=_TYPES[spec.type], description=spec.description,
                            additional_constraints=limits_text(spec), read_only=read_only)
    lo = spec.minimum if spec.minimum is not None else spec.exclusive_minimum
    hi = spec.maximum if spec.maximum is not None else spec.exclusive_maximum
    if spec.type == "int" and (lo is not None or hi is not None):
        d.integer_range = [IntegerRange(from_value=int(lo) if lo is not None else -_INT_LIMIT,
                                        to_value=int(hi) if hi is not None else _INT_LIMIT, step=0)]
    elif spec.type == "float" and (lo is not None or hi is not None):
        # Inclusive in ROS; an exclusive bound (> 0) is enforced by the table's rule and spelled out
        # in additional_constraints.
        d.floating_point_range = [FloatingPointRange(from_value=float(lo) if lo is not None else -math.inf,
                                                     to_value=float(hi) if hi is not None else math.inf, step=0.0)]
    return d


def _overrides(node) -> dict[str, Parameter]:
    # rclpy keeps the command-line, parameter-file and constructor overrides here (no public getter).
    return getattr(node, "_parameter_overrides", {})


def unknown_overrides(node, declared: set[str]) -> list[str]:
    """Override names that are neither declared by the node nor rclpy's own."""
    return sorted(n for n in _overrides(node) if n not in declared and n not in ROS_OWN
                  and not n.startswith(ROS_OWN_PREFIXES))


def declare_and_read_parameters(node, read_only: bool = True) -> PerceptionConfig:
    """Declare the whole table on ``node`` (once; ``read_only`` for the plain node, writable for the
    lifecycle node while unconfigured) and return the validated config; raises :class:`ConfigError`
    naming the first bad or unknown parameter."""
    overrides = _overrides(node)
    values: dict[str, Any] = {}
    for spec in PARAMETERS:
        default = list(spec.default) if isinstance(spec.default, (list, tuple)) else spec.default
        if spec.name in overrides:
            raw = overrides[spec.name].value
            if spec.type == "float" and isinstance(raw, int) and not isinstance(raw, bool):
                raw = float(raw)
            if spec.type == "str_list" and isinstance(raw, (list, tuple)) and not raw:
                raise ConfigError(spec.name, "expected at least one entry")
            value = check_parameter(spec.name, list(raw) if isinstance(raw, tuple) else raw)
            overrides[spec.name] = Parameter(spec.name, value=value)
        if not node.has_parameter(spec.name):
            node.declare_parameter(spec.name, default, descriptor(spec, read_only))
        values[spec.name] = node.get_parameter(spec.name).value
    unknown = unknown_overrides(node, {p.name for p in PARAMETERS})
    if unknown:
        raise ConfigError(unknown[0], unknown_parameter_problem(unknown[0]))
    return PerceptionConfig.from_dict(values)
