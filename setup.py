"""ament_python build of the ROS 2 package ``mv4d`` (also a plain pip package outside ROS)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mv4d"


def _requirements(path: str) -> list[str]:
    lines = []
    for line in open(path, encoding="utf-8"):
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench", "training"]),
    package_data={"mv4d_core": ["weights/*.pt", "weights/*.json", "weights/*.md", "configs/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.json")),
    ],
    python_requires=">=3.10",
    install_requires=_requirements("requirements/core.txt"),
    extras_require={
        "dev": _requirements("requirements/dev.txt"),
        "nuscenes": _requirements("requirements/nuscenes.txt"),
        "ros": _requirements("requirements/ros.txt"),
    },
    zip_safe=False,
    maintainer="mv4d developers",
    maintainer_email="mv4d@example.com",
    description="Label-free 4D occupancy, depth and scene flow from surround cameras, as a ROS 2 package.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "mv4d = mv4d_core.cli:main",
            "perception_node = mv4d_ros.perception_node:main",
        ],
    },
)
