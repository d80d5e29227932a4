"""Launch files and the RViz layout, checked without the (uninstallable) ``launch`` packages.

Each launch file is parsed (ast), then executed with minimal stand-ins for ``launch`` /
``launch_ros`` injected into ``sys.modules`` for the duration of one test: they only record what
``generate_launch_description()`` declares, so the declared arguments, node parameters, remaps,
conditions and the ``ros2 bag play`` command can be inspected. ``ament_index_python`` is the real
one (from the ROS wheels) over a temporary install prefix, or a stand-in when it is absent.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
LAUNCH_FILES = ["mv4d.launch.py", "mv4d_bag.launch.py"]


# ----------------------------------------------------------------------------- stand-ins
class _Entity:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class LaunchDescription(_Entity):
    @property
    def entities(self):
        return list(self.args[0])


class DeclareLaunchArgument(_Entity):
    @property
    def name(self):
        return self.args[0]


class LaunchConfiguration(_Entity):
    def perform(self, context):
        return context.launch_configurations[self.args[0]]


class Context:
    def __init__(self, configs):
        self.launch_configurations = dict(configs)


def _fake_modules(share_dir: Path | None) -> dict[str, types.ModuleType]:
    mods = {}

    def mod(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        mods[name] = m
        return m

    mod("launch", LaunchDescription=LaunchDescription)
    mod("launch.actions", DeclareLaunchArgument=DeclareLaunchArgument,
        OpaqueFunction=type("OpaqueFunction", (_Entity,), {}), ExecuteProcess=type("ExecuteProcess", (_Entity,), {}),
        IncludeLaunchDescription=type("IncludeLaunchDescription", (_Entity,), {}),
        SetParameter=type("SetParameter", (_Entity,), {}), EmitEvent=type("EmitEvent", (_Entity,), {}),
        RegisterEventHandler=type("RegisterEventHandler", (_Entity,), {}))
    mod("launch.events", matches_action=lambda action: ("matches", action))
    mod("launch.conditions", IfCondition=type("IfCondition", (_Entity,), {}),
        UnlessCondition=type("UnlessCondition", (_Entity,), {}))
    mod("launch.substitutions", LaunchConfiguration=LaunchConfiguration,
        PythonExpression=type("PythonExpression", (_Entity,), {}),
        PathJoinSubstitution=type("PathJoinSubstitution", (_Entity,), {}))
    mod("launch_ros")
    mod("launch_ros.actions", Node=type("Node", (_Entity,), {}), LifecycleNode=type("LifecycleNode", (_Entity,), {}))
    mod("launch_ros.event_handlers", OnStateTransition=type("OnStateTransition", (_Entity,), {}))
    mod("launch_ros.events")
    mod("launch_ros.events.lifecycle", ChangeState=type("ChangeState", (_Entity,), {}))
    mod("launch_ros.substitutions", FindPackageShare=type("FindPackageShare", (_Entity,), {}))
    if share_dir is not None:
        def get_package_share_directory(name):
            if name != "mv4d":
                raise LookupError(name)
            return str(share_dir)
        mod("ament_index_python")
        mod("ament_index_python.packages", get_package_share_directory=get_package_share_directory)
    return mods


@pytest.fixture
def installed_share(tmp_path, monkeypatch) -> Path:
    """A fake install prefix whose ``share/mv4d`` is the source tree (config/, launch/)."""
    prefix = tmp_path / "install"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "mv4d").write_text("")
    share = prefix / "share" / "mv4d"
    share.mkdir()
    for d in ("config", "launch"):
        (share / d).symlink_to(REPO / d)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    return share


@pytest.fixture
def launch_env(installed_share, monkeypatch):
    try:
        import ament_index_python.packages  # noqa: F401
        real_ament = True
    except ImportError:
        real_ament = False
    for name, m in _fake_modules(None if real_ament else installed_share).items():
        monkeypatch.setitem(sys.modules, name, m)
    return installed_share


def _load(share: Path, filename: str):
    path = share / "launch" / filename
    spec = importlib.util.spec_from_file_location(filename.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _describe(share: Path, filename: str):
    ld = _load(share, filename).generate_launch_description()
    assert isinstance(ld, LaunchDescription)
    args = {e.name: e.kwargs for e in ld.entities if isinstance(e, DeclareLaunchArgument)}
    return ld, args


def _nodes(ld, configs):
    """Run the OpaqueFunctions with ``configs`` and return the perception Node(s) they create."""
    ctx = Context(configs)
    nodes = []
    for e in ld.entities:
        if type(e).__name__ == "OpaqueFunction":
            nodes += e.kwargs["function"](ctx)
    return nodes


def _defaults(args):
    return {k: v["default_value"] for k, v in args.items()}


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("filename", LAUNCH_FILES)
def test_launch_file_parses_and_defines_generate_launch_description(filename):
    tree = ast.parse((LAUNCH / filename).read_text(), filename=filename)
    funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in funcs
    declared = {c.args[0].value for c in ast.walk(tree) if isinstance(c, ast.Call)
                and getattr(c.func, "id", "") == "DeclareLaunchArgument" and c.args}
    assert declared, "launch file declares no arguments"


def test_vehicle_launch_declares_arguments_and_configures_the_node(launch_env):
    ld, args = _describe(launch_env, "mv4d.launch.py")
    assert {"param_file", "rig_file", "checkpoint", "use_sim_time", "compressed", "lidar_topic"} <= set(args)
    assert args["use_sim_time"]["default_value"] == "false"
    param_file = Path(args["param_file"]["default_value"])
    assert param_file.is_file() and param_file.name == "mv4d.param.yaml"
    [node] = _nodes(ld, _defaults(args))
    kw = node.kwargs
    assert (kw["package"], kw["executable"], kw["name"]) == ("mv4d", "perception_node", "mv4d_perception")
    # setup.py installs the console script the launch file names.
    assert "perception_node = mv4d_ros.perception_node:main" in (REPO / "setup.py").read_text()
    params = kw["parameters"]
    assert params[0] == str(param_file)
    assert params[1] == {"use_sim_time": False}          # empty rig_file/checkpoint do not override the YAML
    remaps = dict(kw["remappings"])
    cams = yaml.safe_load(param_file.read_text())["/**"]["ros__parameters"]["camera_names"]
    for cam in cams:
        assert remaps[f"~/input/{cam}/image"] == f"/{cam}/image_raw"
        assert remaps[f"~/input/{cam}/camera_info"] == f"/{cam}/camera_info"
    assert remaps["~/input/lidar"] == "/lidar/points"
    assert remaps["~/input/odometry"] == "/odom"


def test_vehicle_launch_overrides_only_given_values(launch_env):
    ld, args = _describe(launch_env, "mv4d.launch.py")
    cfg = _defaults(args) | {"rig_file": "/r/rig.yaml", "checkpoint": "/m/model.pt", "compressed": "true"}
    [node] = _nodes(ld, cfg)
    assert node.kwargs["parameters"][1] == {"use_sim_time": False, "rig_file": "/r/rig.yaml",
                                            "checkpoint": "/m/model.pt", "image_transport": "compressed"}
    assert dict(node.kwargs["remappings"])["~/input/CAM_FRONT/image"] == "/CAM_FRONT/image_raw/compressed"
    # use_odometry:=true turns temporal fusion on; odometry_topic:= moves the odometry input.
    [node] = _nodes(ld, _defaults(args) | {"use_odometry": "true", "odometry_topic": "/ekf/odom"})
    assert node.kwargs["parameters"][1] == {"use_sim_time": False, "use_odometry": True}
    assert dict(node.kwargs["remappings"])["~/input/odometry"] == "/ekf/odom"
    with pytest.raises(RuntimeError, match="use_odometry"):
        _nodes(ld, _defaults(args) | {"use_odometry": "yes"})


def test_lifecycle_argument_selects_the_managed_node_and_autostarts_it(launch_env):
    from lifecycle_msgs.msg import Transition

    ld, args = _describe(launch_env, "mv4d.launch.py")
    assert args["lifecycle"]["default_value"] == "false" and args["autostart"]["default_value"] == "true"
    [plain] = _nodes(ld, _defaults(args))
    assert type(plain).__name__ == "Node"                      # the plain node stays the default
    node, activate, configure = _nodes(ld, _defaults(args) | {"lifecycle": "true"})
    assert type(node).__name__ == "LifecycleNode"
    kw = node.kwargs
    assert (kw["executable"], kw["name"], kw["namespace"], kw["arguments"]) == (
        "perception_node", "mv4d_perception", "", ["--lifecycle"])
    assert kw["parameters"][1] == {"use_sim_time": False}
    assert dict(kw["remappings"])["~/input/odometry"] == "/odom"
    # Configure at once; activate when the node reports "inactive" (configure succeeded).
    change = configure.kwargs["event"]
    assert type(configure).__name__ == "EmitEvent" and change.kwargs["transition_id"] == Transition.TRANSITION_CONFIGURE
    assert change.kwargs["lifecycle_node_matcher"] == ("matches", node)
    handler = activate.args[0]
    assert type(handler).__name__ == "OnStateTransition" and handler.kwargs["goal_state"] == "inactive"
    assert handler.kwargs["target_lifecycle_node"] is node
    [emit] = handler.kwargs["entities"]
    assert emit.kwargs["event"].kwargs["transition_id"] == Transition.TRANSITION_ACTIVATE
    # autostart:=false leaves the transitions to a lifecycle manager.
    [only] = _nodes(ld, _defaults(args) | {"lifecycle": "true", "autostart": "false"})
    assert type(only).__name__ == "LifecycleNode"
    with pytest.raises(RuntimeError, match="lifecycle"):
        _nodes(ld, _defaults(args) | {"lifecycle": "yes"})
    # The bag launch file offers the same arguments.
    _, bag_args = _describe(launch_env, "mv4d_bag.launch.py")
    assert {"lifecycle", "autostart"} <= set(bag_args)


def test_bag_launch_uses_sim_time_plays_the_bag_with_clock_and_offers_rviz(launch_env):
    ld, args = _describe(launch_env, "mv4d_bag.launch.py")
    assert {"bag", "rate", "rviz", "rviz_config", "use_sim_time", "rig_file", "checkpoint"} <= set(args)
    assert args["use_sim_time"]["default_value"] == "true"
    assert args["rviz"]["default_value"] == "false" and args["bag"]["default_value"] == ""
    assert Path(args["rviz_config"]["default_value"]).is_file()
    [node] = _nodes(ld, _defaults(args) | {"bag": "/data/bag"})
    assert node.kwargs["parameters"][1]["use_sim_time"] is True
    assert dict(node.kwargs["remappings"])["~/input/odometry"] == "/odom"
    plays = [e for e in ld.entities if type(e).__name__ == "ExecuteProcess"]
    assert len(plays) == 1
    cmd = plays[0].kwargs["cmd"]
    assert cmd[:3] == ["ros2", "bag", "play"] and "--clock" in cmd
    assert type(plays[0].kwargs["condition"]).__name__ == "IfCondition"   # only when bag:= is given
    rviz = [e for e in ld.entities if type(e).__name__ == "Node" and e.kwargs.get("executable") == "rviz2"]
    assert len(rviz) == 1 and rviz[0].kwargs["arguments"][0] == "-d"
    assert type(rviz[0].kwargs["condition"]).__name__ == "IfCondition"


def test_stand_ins_are_removed_after_each_test():
    # monkeypatch.setitem restores sys.modules: no stand-in survives into other test modules.
    for name in ("launch", "launch.actions", "launch.events", "launch_ros", "launch_ros.actions",
                 "launch_ros.events.lifecycle"):
        assert not isinstance(sys.modules.get(name), types.ModuleType) or getattr(sys.modules[name], "__file__", None)


def test_rviz_layout_is_yaml_with_the_expected_displays():
    doc = yaml.safe_load((REPO / "config" / "mv4d.rviz").read_text())
    vm = doc["Visualization Manager"]
    assert vm["Global Options"]["Fixed Frame"] == "base_link"

    def flatten(displays):
        for d in displays:
            yield d
            yield from flatten(d.get("Displays", []))

    displays = list(flatten(vm["Displays"]))
    by_topic = {d["Topic"]["Value"]: d for d in displays if "Topic" in d}
    occ = by_topic["/mv4d_perception/output/occupancy"]
    assert occ["Class"] == "rviz_default_plugins/PointCloud2" and occ["Style"] == "Boxes"
    assert occ["Color Transformer"] == "AxisColor" and occ["Axis"] == "Z"     # the cloud has x, y, z, prob
    assert occ["Topic"]["Reliability Policy"] == "Reliable"   # the node publishes RELIABLE depth 1
    assert by_topic["/mv4d_perception/output/points"]["Color Transformer"] == "RGB8"
    assert by_topic["/mv4d_perception/output/flow"]["Class"] == "rviz_default_plugins/PointCloud2"
    assert by_topic["/mv4d_perception/output/depth/CAM_FRONT"]["Class"] == "rviz_default_plugins/Image"
    assert by_topic["/mv4d_perception/output/occupancy_bev"]["Class"] == "rviz_default_plugins/Map"
    assert by_topic["/mv4d_perception/output/occupancy_markers"]["Enabled"] is False   # debug only
    cams = [d for d in displays if d["Class"] == "rviz_default_plugins/Image" and d["Topic"]["Value"].endswith("image_raw")]
    assert len(cams) == 6
