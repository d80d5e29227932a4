"""Perception parameters: one typed model shared by the ROS node and the offline tools.

The fields of :class:`PerceptionConfig` and its groups (default, description and limits of each,
written once with :func:`param`) are the single source of truth. From them come

* the parameter table :data:`PARAMETERS` (dotted ROS names such as ``sync.slop_s``) and the
  validation of :meth:`PerceptionConfig.from_dict` (errors name the parameter),
* the JSON schema shipped as ``config/mv4d.schema.json`` (:func:`json_schema`), the parameter
  file ``config/mv4d.param.yaml`` (:func:`param_yaml`) and the parameter table of
  ``mv4d_ros/README.md`` (:func:`param_table_markdown`); a test checks the shipped files equal their
  generated form, so nothing can drift,
* the ROS parameter declarations of ``mv4d_ros.perception_node`` (type, range, description).

Regenerate them after editing a field::

    python -m mv4d_core.pipeline.config --schema > config/mv4d.schema.json
    python -m mv4d_core.pipeline.config --params-yaml > config/mv4d.param.yaml
    python -m mv4d_core.pipeline.config --params-table     # paste into mv4d_ros/README.md
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from mv4d_core.geometry.rig import NUSCENES_CAMERAS

#: ``SENSOR_DATA`` etc., optionally followed by ``_<depth>`` (Isaac ROS ``input_qos`` style).
QOS_PATTERN = r"^(SENSOR_DATA|SYSTEM_DEFAULT|DEFAULT|RELIABLE|BEST_EFFORT)(_[1-9][0-9]*)?$"
DEVICE_PATTERN = r"^(cpu|cuda(:[0-9]+)?)$"
ENGINES = ("torch", "onnxruntime", "tensorrt")
IMAGE_TRANSPORTS = ("raw", "compressed")
#: RViz2 CUBE_LIST becomes unusable around 20k cubes (ros2/rviz#790): the cap stays well below.
MAX_MARKERS_LIMIT = 20000


class ConfigError(ValueError):
    """A perception parameter is invalid; the message starts with ``parameter '<name>'``."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"parameter '{name}': {problem}")
        self.parameter = name


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: dotted ROS name, type (``bool|int|float|str|str_list``), default and limits."""

    name: str
    type: str
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    enum: tuple[str, ...] | None = None
    pattern: str | None = None


def _check_value(spec: ParamSpec, v: Any) -> Any:
    """Type-check and range-check one value; returns it normalized (int -> float for floats)."""
    name = spec.name
    if spec.type == "bool":
        if not isinstance(v, bool):
            raise ConfigError(name, f"expected true/false, got {v!r}")
        return v
    if spec.type == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(name, f"expected an integer, got {v!r}")
    elif spec.type == "float":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(name, f"expected a number, got {v!r}")
        v = float(v)
        if not math.isfinite(v):
            raise ConfigError(name, f"expected a finite number, got {v!r}")
    elif spec.type == "str":
        if not isinstance(v, str):
            raise ConfigError(name, f"expected a string, got {v!r}")
    elif spec.type == "str_list":
        if isinstance(v, str) or not isinstance(v, (list, tuple)) or not all(isinstance(s, str) and s for s in v):
            raise ConfigError(name, f"expected a list of non-empty strings, got {v!r}")
        if len(v) == 0:
            raise ConfigError(name, "expected at least one entry")
        if len(set(v)) != len(v):
            raise ConfigError(name, f"entries must be unique, got {list(v)}")
        return list(v)
    if spec.minimum is not None and v < spec.minimum:
        raise ConfigError(name, f"must be >= {spec.minimum}, got {v}")
    if spec.maximum is not None and v > spec.maximum:
        raise ConfigError(name, f"must be <= {spec.maximum}, got {v}")
    if spec.exclusive_minimum is not None and v <= spec.exclusive_minimum:
        raise ConfigError(name, f"must be > {spec.exclusive_minimum}, got {v}")
    if spec.exclusive_maximum is not None and v >= spec.exclusive_maximum:
        raise ConfigError(name, f"must be < {spec.exclusive_maximum}, got {v}")
    if spec.enum is not None and v not in spec.enum:
        raise ConfigError(name, f"must be one of {list(spec.enum)}, got {v!r}")
    if spec.pattern is not None and not re.match(spec.pattern, v):
        raise ConfigError(name, f"{v!r} does not match {spec.pattern}")
    return v


def param(default: Any, description: str, **limits: Any) -> Any:
    """A parameter field: its default, description and limits (``minimum``, ``maximum``,
    ``exclusive_minimum``, ``exclusive_maximum``, ``enum``, ``pattern``) in one place."""
    return field(default=default, metadata={"description": description, **limits})


@dataclass(frozen=True)
class SyncConfig:
    slop_s: float = param(0.08, "ApproximateTime slop: the largest stamp spread inside one camera set, and the "
                                "furthest a LiDAR cloud's stamp may be from the set's to join it, seconds.",
                          exclusive_minimum=0.0, maximum=1.0)
    queue_size: int = param(10, "Messages kept per input while waiting for a matching set (and LiDAR clouds kept "
                                "for matching).", minimum=1, maximum=1000)


@dataclass(frozen=True)
class PublishConfig:
    occupancy: bool = param(True, "Publish ~/output/occupancy (PointCloud2 of occupied voxel centres).")
    depth: bool = param(True, "Publish ~/output/depth/<cam> (32FC1 metric depth).")
    points: bool = param(True, "Publish ~/output/points (coloured points from depth).")
    flow: bool = param(True, "Publish ~/output/flow (occupied voxels with velocity).")
    bev: bool = param(True, "Publish ~/output/occupancy_bev (nav_msgs/OccupancyGrid).")
    moving: bool = param(True, "Publish ~/output/moving (PointCloud2 of the occupied voxels that move: x, y, z, "
                               "vx, vy, vz, moving_prob); with markers, velocity arrows join the MarkerArray.")
    markers: bool = param(False, "Publish ~/output/occupancy_markers (debug MarkerArray, capped).")


@dataclass(frozen=True)
class PointsConfig:
    stride: int = param(1, "Keep every stride-th pixel of the (already stride-4) depth maps in ~/output/points.",
                        minimum=1, maximum=64)
    max_depth_m: float = param(60.0, "Depth pixels farther than this are left out of ~/output/points.",
                               exclusive_minimum=0.0)


@dataclass(frozen=True)
class FlowConfig:
    min_speed_mps: float = param(0.0, "Occupied voxels slower than this are left out of ~/output/flow.", minimum=0.0)
    moving_min_prob: float = param(0.5, "Motion probability from which a voxel counts as moving (the model's motion "
                                        "gate; 0 or 1 from the speed for models without one): below it its flow is "
                                        "published as 0, and only moving voxels are in ~/output/moving.",
                                   exclusive_minimum=0.0, maximum=1.0)
    moving_min_speed_mps: float = param(0.5, "Speed (m/s) an occupied voxel needs to be in ~/output/moving.",
                                        minimum=0.0)
    max_arrows: int = param(200, "Hard cap on velocity arrows in the MarkerArray (fastest kept).", minimum=1,
                            maximum=10000)
    arrow_horizon_s: float = param(1.0, "A velocity arrow ends where its voxel would be after this many seconds.",
                                   exclusive_minimum=0.0, maximum=10.0)


@dataclass(frozen=True)
class BevConfig:
    # base_frame z = 0 is the ground plane (REP 105 base_footprint height; nuScenes' ego frame and the
    # synthetic rig): the default slab leaves the road out, so the grid is a costmap of what stands on it.
    z_min_m: float = param(0.3, "Lower bound (base_frame z, m) of the slab collapsed into the BEV grid; voxels whose "
                                "centre lies below it (the road, kerbs) are left out. The default assumes z = 0 is "
                                "the ground plane.", minimum=-100.0, maximum=100.0)
    z_max_m: float = param(2.5, "Upper bound (base_frame z, m) of the slab collapsed into the BEV grid (above it: "
                                "overhangs the vehicle passes under).", minimum=-100.0, maximum=100.0)


@dataclass(frozen=True)
class PerceptionConfig:
    """Every perception parameter, validated. Build with :meth:`from_dict` / :meth:`from_yaml`.

    The fields (defaults, descriptions, limits) are the parameter table: :data:`PARAMETERS`, the JSON
    schema, the shipped parameter file and the node's declarations all derive from them."""

    camera_names: tuple[str, ...] = param(
        tuple(NUSCENES_CAMERAS),
        "Camera names in model order; topics are ~/input/<name>/image and ~/input/<name>/camera_info.")
    rig_file: str = param("", "Rig YAML with intrinsics and extrinsics; empty = CameraInfo messages plus "
                              "base_frame->camera from /tf_static.")
    image_transport: str = param("raw", "raw: sensor_msgs/Image on ~/input/<cam>/image; compressed: "
                                        "sensor_msgs/CompressedImage there.", enum=IMAGE_TRANSPORTS)
    use_lidar: bool = param(False, "Subscribe ~/input/lidar (PointCloud2); the cloud nearest to each camera set within "
                                   "sync.slop_s joins it (a set without one is processed camera-only, counted), and a "
                                   "LiDAR fusion model gets it (with intensity and ring) as an input.")
    lidar_only_after_s: float = param(
        1.0, "With a LiDAR fusion model and use_lidar: once no camera set has completed for this long (cameras "
             "stopped or broken), each LiDAR cloud is processed alone on the model's LiDAR branch (occupancy, flow, "
             "moving; no depth), counted as lidar_only_frames and named in /diagnostics. 0 = never.", minimum=0.0)
    use_odometry: bool = param(False, "Subscribe ~/input/odometry (nav_msgs/Odometry, pose of base_frame in the "
                                      "odom/map frame) and fuse the previous frame's volume (temporal fusion); "
                                      "false = every set is processed on its own.")
    odometry_tolerance_s: float = param(
        0.05, "A set uses the odometry pose interpolated at its stamp only when an odometry message lies within "
              "this many seconds of it (past the newest message the pose is extrapolated at most this far); "
              "otherwise the set is processed without temporal fusion.",
        exclusive_minimum=0.0, maximum=1.0)
    odometry_wait_s: float = param(
        0.1, "A set newer than the newest odometry message waits at most this long for the pose at its stamp "
             "before it is processed (extrapolated, or without temporal fusion).", minimum=0.0, maximum=1.0)
    odometry_qos: str = param("RELIABLE_50", "QoS of the odometry subscription (same forms as input_qos; keep "
                                             "enough history for the poses around a set).", pattern=QOS_PATTERN)
    base_frame: str = param("base_link", "Frame of every 3D output (REP 105 base_link).",
                            pattern=r"^[A-Za-z_][A-Za-z0-9_/]*$")
    input_qos: str = param("RELIABLE_5", "QoS of image/LiDAR subscriptions: SENSOR_DATA (best effort), "
                                         "SYSTEM_DEFAULT, DEFAULT, RELIABLE, BEST_EFFORT, optionally _<depth> (history "
                                         "depth). A RELIABLE subscription receives nothing from a best-effort "
                                         "publisher (named in /diagnostics); see mv4d_ros/README.md.",
                           pattern=QOS_PATTERN)
    input_timeout_s: float = param(
        1.0, "An input with no message for this long is stale: named in /diagnostics (WARN; ERROR once no set "
             "completes for a whole diagnostics window).", exclusive_minimum=0.0)
    max_clock_jump_s: float = param(
        1.0, "A message or set older than the newest on its input by at most this is late (dropped, counted); "
             "a larger jump back (bag loop, restarted clock) resets synchronizer and temporal state.",
        exclusive_minimum=0.0)
    sync: SyncConfig = field(default_factory=SyncConfig)
    engine: str = param("torch", "Inference engine.", enum=ENGINES)
    checkpoint: str = param("", "Model checkpoint / exported model path; empty = the weights shipped with mv4d (the "
                                "LiDAR fusion weights with use_lidar, when shipped).")
    device: str = param("cpu", "Torch device: cpu, cuda or cuda:N.", pattern=DEVICE_PATTERN)
    occupancy_threshold: float = param(0.5, "A voxel is occupied when its probability is >= this.",
                                       exclusive_minimum=0.0, exclusive_maximum=1.0)
    publish: PublishConfig = field(default_factory=PublishConfig)
    max_markers: int = param(5000, "Hard cap on cubes in the debug MarkerArray (highest probability kept).",
                             minimum=1, maximum=MAX_MARKERS_LIMIT)
    points: PointsConfig = field(default_factory=PointsConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    bev: BevConfig = field(default_factory=BevConfig)
    log_throttle_s: float = param(5.0, "Each bad-input cause is logged at most once per this period.",
                                  exclusive_minimum=0.0)
    diagnostics_period_s: float = param(1.0, "Period of /diagnostics messages.", exclusive_minimum=0.0)
    diagnostics_window_s: float = param(
        5.0, "Rates, drops and completed sets in /diagnostics are counted over this sliding window; a status "
             "returns to OK once a whole window is healthy.", exclusive_minimum=0.0)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], strict: bool = True) -> "PerceptionConfig":
        """From flat dotted keys (``{"sync.slop_s": 0.1}``, as ROS gives them) or nested mappings
        (``{"sync": {"slop_s": 0.1}}``, as YAML reads). Missing keys take the defaults; unknown keys
        raise when ``strict``. Raises :class:`ConfigError` naming the first bad parameter."""
        flat = flatten(values)
        unknown = sorted(set(flat) - set(_SPECS))
        if unknown and strict:
            raise ConfigError(unknown[0], unknown_parameter_problem(unknown[0]))
        checked = {name: _check_value(spec, flat.get(name, spec.default)) for name, spec in _SPECS.items()}
        if checked["bev.z_max_m"] <= checked["bev.z_min_m"]:
            raise ConfigError("bev.z_max_m", f"must exceed bev.z_min_m ({checked['bev.z_min_m']}), "
                                             f"got {checked['bev.z_max_m']}")
        groups: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for name, v in checked.items():
            if "." in name:
                g, k = name.split(".", 1)
                groups.setdefault(g, {})[k] = v
            else:
                top[name] = v
        top["camera_names"] = tuple(top["camera_names"])
        return cls(sync=SyncConfig(**groups["sync"]), publish=PublishConfig(**groups["publish"]),
                   points=PointsConfig(**groups["points"]), flow=FlowConfig(**groups["flow"]),
                   bev=BevConfig(**groups["bev"]), **top)

    @classmethod
    def from_yaml(cls, path: str | Path, node_name: str | None = None) -> "PerceptionConfig":
        """Read a ROS parameter file (``<node or /**>: ros__parameters: {...}``) or a plain mapping."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        return cls.from_dict(ros_parameters_from_yaml(data, node_name))

    def to_flat_dict(self) -> dict[str, Any]:
        """Dotted-name -> value, the form ROS parameters take."""
        out: dict[str, Any] = {}
        for name in _SPECS:
            if "." in name:
                g, k = name.split(".", 1)
                out[name] = getattr(getattr(self, g), k)
            else:
                out[name] = getattr(self, name)
        out["camera_names"] = list(out["camera_names"])
        return out


_GROUPS = {"sync": SyncConfig, "publish": PublishConfig, "points": PointsConfig, "flow": FlowConfig,
           "bev": BevConfig}


def _param_type(default: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, str):
        return "str"
    if isinstance(default, (tuple, list)):
        return "str_list"
    raise TypeError(f"no parameter type for default {default!r}")


def _specs(cls, prefix: str = "") -> list[ParamSpec]:
    out = []
    for f in fields(cls):
        if f.name in _GROUPS and prefix == "":
            out += _specs(_GROUPS[f.name], f"{f.name}.")
            continue
        meta = dict(f.metadata)
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        limits = {k: meta[k] for k in ("minimum", "maximum", "exclusive_minimum", "exclusive_maximum", "pattern")
                  if k in meta}
        if "enum" in meta:
            limits["enum"] = tuple(meta["enum"])
        out.append(ParamSpec(prefix + f.name, _param_type(f.default), default, meta["description"], **limits))
    return out


#: The parameter table, derived from the :class:`PerceptionConfig` fields (dotted ROS names).
PARAMETERS: tuple[ParamSpec, ...] = tuple(_specs(PerceptionConfig))
_SPECS = {p.name: p for p in PARAMETERS}


def closest_parameter(name: str) -> str | None:
    """The known parameter name closest to ``name`` (a typo), or None when nothing is close."""
    import difflib

    found = difflib.get_close_matches(name, list(_SPECS), n=1, cutoff=0.6)
    if not found:  # a right leaf under a wrong group, or the reverse: compare the last part alone
        leaf = name.rsplit(".", 1)[-1]
        found = [n for n in _SPECS if n.rsplit(".", 1)[-1] == leaf][:1]
    return found[0] if found else None


def unknown_parameter_problem(name: str) -> str:
    """``unknown parameter; did you mean 'x'?`` (the text after ``parameter '<name>': ``)."""
    close = closest_parameter(name)
    hint = f"did you mean '{close}'?" if close else f"known: {', '.join(sorted(_SPECS))}"
    return f"unknown parameter (a typo?); {hint}"


def check_parameter(name: str, value: Any) -> Any:
    """Type- and range-check one parameter value (dotted name); returns it normalized. Raises
    :class:`ConfigError` naming it; cross-field rules are checked by :meth:`PerceptionConfig.from_dict`."""
    spec = _SPECS.get(name)
    if spec is None:
        raise ConfigError(name, unknown_parameter_problem(name))
    return _check_value(spec, value)


def limits_text(spec: ParamSpec) -> str:
    """The limits of one parameter in words: ``> 0; <= 1``, ``one of a, b``, ``matches ^...$``."""
    parts = []
    for attr, sign in (("exclusive_minimum", ">"), ("minimum", ">="), ("exclusive_maximum", "<"), ("maximum", "<=")):
        v = getattr(spec, attr)
        if v is not None:
            parts.append(f"{sign} {v:g}")
    if spec.enum:
        parts.append("one of " + ", ".join(spec.enum))
    if spec.pattern and not spec.enum:
        parts.append(f"matches {spec.pattern}")
    return "; ".join(parts)


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> dotted keys (lists are values, not nested)."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def ros_parameters_from_yaml(data: Any, node_name: str | None = None) -> dict[str, Any]:
    """The ``ros__parameters`` mapping of a ROS 2 parameter file (``/**`` or the node's name)."""
    if not isinstance(data, Mapping):
        raise ConfigError("<file>", "expected a mapping at the top level")
    for key in ([node_name] if node_name else []) + ["/**"]:
        if key in data and isinstance(data[key], Mapping) and "ros__parameters" in data[key]:
            return dict(data[key]["ros__parameters"] or {})
    if any(isinstance(v, Mapping) and "ros__parameters" in v for v in data.values()):
        raise ConfigError("<file>", f"no ros__parameters section for {node_name or '/**'}")
    return dict(data)


def json_schema() -> dict:
    """JSON schema (draft-07) of ``config/mv4d.param.yaml``; parameters nested as in the YAML."""
    def prop(spec: ParamSpec) -> dict:
        p: dict[str, Any] = {"description": spec.description}
        if spec.type == "str_list":
            p.update(type="array", items={"type": "string", "minLength": 1}, minItems=1, uniqueItems=True)
        else:
            p["type"] = {"bool": "boolean", "int": "integer", "float": "number", "str": "string"}[spec.type]
        for key, v in (("minimum", spec.minimum), ("maximum", spec.maximum),
                       ("exclusiveMinimum", spec.exclusive_minimum), ("exclusiveMaximum", spec.exclusive_maximum),
                       ("pattern", spec.pattern)):
            if v is not None:
                p[key] = v
        if spec.enum is not None:
            p["enum"] = list(spec.enum)
        p["default"] = spec.default
        return p

    params: dict[str, Any] = {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
    for spec in PARAMETERS:
        node = params
        parts = spec.name.split(".")
        for g in parts[:-1]:
            if g not in node["properties"]:
                node["properties"][g] = {"type": "object", "properties": {}, "required": [],
                                         "additionalProperties": False}
                node["required"].append(g)
            node = node["properties"][g]
        node["properties"][parts[-1]] = prop(spec)
        node["required"].append(parts[-1])
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Parameters for the mv4d perception node",
        "type": "object",
        "definitions": {"mv4d_perception": params},
        "properties": {
            "/**": {
                "type": "object",
                "properties": {"ros__parameters": {"$ref": "#/definitions/mv4d_perception"}},
                "required": ["ros__parameters"],
                "additionalProperties": False,
            }
        },
        "required": ["/**"],
        "additionalProperties": False,
    }


def param_yaml() -> str:
    """``config/mv4d.param.yaml``: every parameter at its default under ``/**: ros__parameters``, each
    preceded by its description as a comment."""
    import textwrap

    def scalar(v: Any) -> str:
        return yaml.safe_dump(v, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()

    lines = ["# Parameters of the mv4d perception node at their defaults (generated from",
             "# mv4d_core/pipeline/config.py: python -m mv4d_core.pipeline.config --params-yaml).",
             "# Dotted ROS names (sync.slop_s) are nested mappings here; config/mv4d.schema.json checks the file.",
             "/**:", "  ros__parameters:"]
    group = None
    for spec in PARAMETERS:
        parts = spec.name.split(".")
        indent = "    " if len(parts) == 1 else "      "
        if len(parts) == 2 and parts[0] != group:
            lines.append(f"    {parts[0]}:")
        group = parts[0] if len(parts) == 2 else None
        for text in textwrap.wrap(spec.description, 100 - len(indent) - 2):
            lines.append(f"{indent}# {text}")
        lines.append(f"{indent}{parts[-1]}: {scalar(spec.default)}")
    return "\n".join(lines) + "\n"


def param_table_markdown() -> str:
    """The parameter table of ``mv4d_ros/README.md`` (name, type, description with limits, default)."""
    types = {"bool": "bool", "int": "int", "float": "double", "str": "string", "str_list": "string[]"}

    def esc(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")

    def limits(spec: ParamSpec) -> str:
        parts = []
        for attr, sign in (("exclusive_minimum", ">"), ("minimum", ">="), ("exclusive_maximum", "<"),
                           ("maximum", "<=")):
            v = getattr(spec, attr)
            if v is not None:
                parts.append(f"{sign} {v:g}")
        if spec.enum:
            parts.append("one of " + ", ".join(f"`{e}`" for e in spec.enum))
        return f" ({esc('; '.join(parts))})" if parts else ""

    def default(spec: ParamSpec) -> str:
        v = spec.default
        if isinstance(v, list):
            return ", ".join(f"`{x}`" for x in v)
        if isinstance(v, bool):
            return f"`{str(v).lower()}`"
        return '`""`' if v == "" else f"`{v}`"

    rows = ["| Name | Type | Description | Default |", "| --- | --- | --- | --- |"]
    rows += [f"| `{p.name}` | {types[p.type]} | {esc(p.description)}{limits(p)} | {default(p)} |" for p in PARAMETERS]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--schema"]:
        print(json.dumps(json_schema(), indent=2))
        return 0
    if argv == ["--params-yaml"]:
        sys.stdout.write(param_yaml())
        return 0
    if argv == ["--params-table"]:
        sys.stdout.write(param_table_markdown())
        return 0
    print("usage: python -m mv4d_core.pipeline.config --schema | --params-yaml | --params-table", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
