"""Shared fixtures: the real-data folder, and a loopback-only network namespace for DDS tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))

from netns import RosNetns, skip_or_fail_without_ros  # noqa: E402

SHARED_DATA = (REPO.parent / "shared" / "data").resolve()


def _require_shared() -> bool:
    return os.environ.get("MV4D_REQUIRE_SHARED") == "1"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` with the real nuScenes / AV2 / KITTI samples.

    Skips with a reason on a user's clone; in CI (``MV4D_REQUIRE_SHARED=1``) its absence fails.
    """
    if not SHARED_DATA.is_dir():
        msg = f"real-data samples not found at {SHARED_DATA} (only present next to the developers' checkout and in CI)"
        if _require_shared():
            pytest.fail(msg)
        pytest.skip(msg)
    return SHARED_DATA


@pytest.fixture(scope="session")
def nuscenes_minivis(shared_data: Path) -> Path:
    root = shared_data / "nuscenes_minivis" / "data"
    if not (root / "v1.0-mini-extract").is_dir():
        pytest.fail(f"nuScenes sample incomplete at {root}")
    return root


@pytest.fixture
def ros_netns(request) -> RosNetns:
    """Runs Python code with real rclpy inside ``unshare -rn`` (only ``lo``), with
    ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and a per-test ``ROS_DOMAIN_ID``.

    Skips loudly when the ros-jazzy wheels or user namespaces are unavailable (never fakes).
    """
    skip_or_fail_without_ros()
    return RosNetns(domain_id=RosNetns.domain_for(request.node.nodeid))
