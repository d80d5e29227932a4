"""Perception parameters: shipped YAML, JSON schema and the typed config agree and reject bad values."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from mv4d_core.pipeline.config import (PARAMETERS, ConfigError, PerceptionConfig, json_schema, param_table_markdown,
                                       param_yaml, ros_parameters_from_yaml)

REPO = Path(__file__).resolve().parents[1]
YAML_PATH = REPO / "config" / "mv4d.param.yaml"
SCHEMA_PATH = REPO / "config" / "mv4d.schema.json"


@pytest.fixture(scope="module")
def shipped() -> dict:
    return yaml.safe_load(YAML_PATH.read_text())


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def _with(doc: dict, dotted: str, value) -> dict:
    doc = copy.deepcopy(doc)
    node = doc["/**"]["ros__parameters"]
    *groups, key = dotted.split(".")
    for g in groups:
        node = node[g]
    node[key] = value
    return doc


def test_shipped_schema_is_generated_from_the_parameter_table(schema):
    # The schema file is an artefact of PARAMETERS; regenerate it when the table changes.
    assert schema == json.loads(json.dumps(json_schema()))
    jsonschema.Draft7Validator.check_schema(schema)


def test_shipped_yaml_validates_against_the_schema(shipped, schema):
    jsonschema.validate(shipped, schema)
    assert list(shipped) == ["/**"], "parameter file root must be /** : ros__parameters"


def test_shipped_yaml_sets_every_parameter_and_loads_into_the_config(shipped):
    from mv4d_core.pipeline.config import flatten
    flat = flatten(ros_parameters_from_yaml(shipped))
    assert set(flat) == {p.name for p in PARAMETERS}
    cfg = PerceptionConfig.from_yaml(YAML_PATH)
    assert cfg.camera_names[1] == "CAM_FRONT"
    assert cfg.sync.slop_s == pytest.approx(0.08)
    assert cfg.engine == "torch" and cfg.publish.occupancy and not cfg.publish.markers
    assert cfg.to_flat_dict() == {k: (list(v) if isinstance(v, tuple) else v) for k, v in flat.items()}


def test_defaults_equal_the_dataclass_defaults():
    assert PerceptionConfig.from_dict({}) == PerceptionConfig()


@pytest.mark.parametrize("name,value", [
    ("sync.slop_s", -0.1),
    ("sync.slop_s", 0.0),
    ("sync.queue_size", 0),
    ("sync.queue_size", 2.5),
    ("engine", "caffe"),
    ("input_qos", "FAST"),
    ("device", "gpu0"),
    ("occupancy_threshold", 1.0),
    ("max_markers", 50000),
    ("camera_names", []),
    ("camera_names", ["CAM_FRONT", "CAM_FRONT"]),
    ("publish.points", "yes"),
    ("image_transport", "theora"),
    ("points.stride", 0),
])
def test_invalid_values_are_rejected_naming_the_parameter(shipped, schema, name, value):
    bad = _with(shipped, name, value)
    with pytest.raises(jsonschema.ValidationError) as schema_err:
        jsonschema.validate(bad, schema)
    # The schema error path ends at the offending key.
    assert list(schema_err.value.absolute_path)[2:][:len(name.split("."))] == name.split(".")
    with pytest.raises(ConfigError, match=rf"parameter '{name}'") as cfg_err:
        PerceptionConfig.from_dict(ros_parameters_from_yaml(bad))
    assert cfg_err.value.parameter == name


def test_unknown_parameter_is_rejected_by_both(shipped, schema):
    bad = _with(shipped, "sync.slopp_s", 0.1)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(ConfigError, match="parameter 'sync.slopp_s': unknown"):
        PerceptionConfig.from_dict(ros_parameters_from_yaml(bad))


def test_cross_field_rule_bev_range():
    with pytest.raises(ConfigError, match="parameter 'bev.z_max_m'"):
        PerceptionConfig.from_dict({"bev.z_min_m": 2.0, "bev.z_max_m": 1.0})


def test_flat_and_nested_forms_agree():
    flat = PerceptionConfig.from_dict({"sync.slop_s": 0.05, "publish.bev": False, "input_qos": "RELIABLE_10"})
    nested = PerceptionConfig.from_dict({"sync": {"slop_s": 0.05}, "publish": {"bev": False},
                                         "input_qos": "RELIABLE_10"})
    assert flat == nested
    assert flat.sync.slop_s == 0.05 and not flat.publish.bev


def test_every_parameter_is_documented_in_the_node_readme():
    readme = (REPO / "mv4d_ros" / "README.md").read_text()
    assert param_table_markdown() in readme, "regenerate: python -m mv4d_core.pipeline.config --params-table"
    for p in PARAMETERS:
        assert f"| `{p.name}` |" in readme, f"parameter {p.name} missing from mv4d_ros/README.md"


def test_shipped_parameter_file_is_generated_from_the_config_fields():
    assert YAML_PATH.read_text() == param_yaml(), "regenerate: python -m mv4d_core.pipeline.config --params-yaml"
    # every field default appears once: the table is derived from the dataclasses, not written twice
    assert PerceptionConfig().to_flat_dict() == {p.name: p.default for p in PARAMETERS}


def test_a_misspelled_parameter_names_the_closest_known_one():
    from mv4d_core.pipeline.config import check_parameter, closest_parameter, unknown_parameter_problem

    assert closest_parameter("sync.slopp_s") == "sync.slop_s"
    assert closest_parameter("use_lidr") == "use_lidar"
    assert closest_parameter("slop_s") == "sync.slop_s"          # the right leaf without its group
    assert closest_parameter("zzz_qqq") is None
    assert unknown_parameter_problem("use_lidr") == "unknown parameter (a typo?); did you mean 'use_lidar'?"
    with pytest.raises(ConfigError, match="parameter 'use_lidr': unknown parameter .* did you mean 'use_lidar'"):
        PerceptionConfig.from_dict({"use_lidr": True})
    assert check_parameter("sync.slop_s", 1) == 1.0              # an integer for a double is that number
    with pytest.raises(ConfigError, match=r"parameter 'sync.slop_s': must be > 0.0"):
        check_parameter("sync.slop_s", 0.0)


def test_limits_in_words_for_the_ros_descriptors():
    from mv4d_core.pipeline.config import limits_text

    specs = {p.name: p for p in PARAMETERS}
    assert limits_text(specs["sync.slop_s"]) == "> 0; <= 1"
    assert limits_text(specs["sync.queue_size"]) == ">= 1; <= 1000"
    assert limits_text(specs["engine"]) == "one of torch, onnxruntime, tensorrt"
    assert limits_text(specs["input_qos"]).startswith("matches ^(SENSOR_DATA|")
    assert limits_text(specs["rig_file"]) == ""


def test_node_defaults_for_a_vehicle():
    cfg = PerceptionConfig()
    # Reliable keep-last 5 lost the fewest frames over DDS here (mv4d_ros/README.md, docs/benchmarks.md).
    assert cfg.input_qos == "RELIABLE_5" and cfg.odometry_qos == "RELIABLE_50"
    assert (cfg.bev.z_min_m, cfg.bev.z_max_m) == (0.3, 2.5)       # the ground stays out of the costmap
    assert cfg.odometry_wait_s <= cfg.diagnostics_window_s and cfg.input_timeout_s < cfg.diagnostics_window_s
