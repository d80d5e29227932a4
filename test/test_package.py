"""Packaging: ament_python layout, package.xml format 3, console scripts, no rclpy in mv4d_core."""

import configparser
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_package_xml_is_format3_ament_python_with_ros_deps():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "mv4d"
    assert root.find("export/build_type").text == "ament_python"
    exec_deps = {e.text for e in root.findall("exec_depend")}
    for dep in ("rclpy", "sensor_msgs", "std_msgs", "geometry_msgs", "nav_msgs", "visualization_msgs",
                "diagnostic_msgs", "python3-numpy", "python3-torch"):
        assert dep in exec_deps, dep
    assert "python3-pytest" in {e.text for e in root.findall("test_depend")}


def test_setup_cfg_puts_executables_where_ros2_run_looks():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["develop"]["script_dir"] == "$base/lib/mv4d"
    assert cfg["install"]["install_scripts"] == "$base/lib/mv4d"
    assert (REPO / "resource" / "mv4d").is_file()


def test_importing_core_never_imports_rclpy():
    code = ("import sys, mv4d_core, mv4d_core.geometry, mv4d_core.data, mv4d_core.cli, pkgutil, importlib\n"
            "for m in pkgutil.walk_packages(mv4d_core.__path__, 'mv4d_core.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = [m for m in sys.modules if m == 'rclpy' or m.startswith('rclpy.')]\n"
            "assert not bad, bad\nprint('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok")


@pytest.mark.slow
def test_wheel_installs_ros_share_files_and_both_packages(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    wheel = next(tmp_path.glob("mv4d-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("mv4d_core/geometry/") for n in names)
    assert any(n.startswith("mv4d_ros/") for n in names)
    data = [n for n in names if ".data/data/share/" in n]
    assert any(n.endswith("share/ament_index/resource_index/packages/mv4d") for n in data)
    assert any(n.endswith("share/mv4d/package.xml") for n in data)
    assert not any(n.startswith("test/") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    assert "mv4d = mv4d_core.cli:main" in text and "perception_node = mv4d_ros.perception_node:main" in text


def test_cli_help_lists_commands():
    r = subprocess.run([sys.executable, "-m", "mv4d_core.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "mv4d" in r.stdout
