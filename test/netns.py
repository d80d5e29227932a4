"""Run real-DDS test code inside a loopback-only network namespace.

``unshare -rn`` gives a user + network namespace whose only interface is ``lo`` (brought up
here), so no discovery or data packet can leave the machine. ``ROS_AUTOMATIC_DISCOVERY_RANGE``
is ``LOCALHOST`` on top, and every test gets its own ``ROS_DOMAIN_ID``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass


@functools.lru_cache(maxsize=1)
def ros_available_reason() -> str:
    """Empty string when real-DDS tests can run; else why not."""
    if shutil.which("unshare") is None:
        return "the unshare command is missing (util-linux)"
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"user/network namespaces are not permitted here: {probe.stderr.strip()}"
    r = subprocess.run([sys.executable, "-c", "import rclpy, sensor_msgs.msg, std_msgs.msg"],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["?"])[-1]
        return f"real rclpy is not importable ({tail}); install with `pip install -r requirements/ros.txt`"
    return ""


def skip_or_fail_without_ros() -> None:
    """Skip (user clones) or fail (CI, ``MV4D_REQUIRE_SHARED=1``) when real-DDS tests cannot run."""
    import pytest

    reason = ros_available_reason()
    if not reason:
        return
    if os.environ.get("MV4D_REQUIRE_SHARED") == "1" and os.environ.get("MV4D_ALLOW_NO_ROS") != "1":
        pytest.fail(f"ROS DDS tests cannot run in CI: {reason}")
    pytest.skip(f"ROS DDS tests skipped: {reason}")


def run_namespaced_json(script: str, test_id: str, timeout: float) -> dict:
    """Run ``script`` in a fresh loopback namespace (domain id from ``test_id``); the last stdout line is JSON."""
    import json

    skip_or_fail_without_ros()
    ns = RosNetns(domain_id=RosNetns.domain_for(test_id))
    return json.loads(ns.check_python(script, timeout=timeout).strip().splitlines()[-1])


@dataclass
class RosNetns:
    domain_id: int

    @staticmethod
    def domain_for(test_id: str) -> int:
        # Valid ROS domain ids are 0..101 for the default port mapping; avoid 0 (the usual default).
        return 1 + int(hashlib.sha1(test_id.encode()).hexdigest(), 16) % 100

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "ROS_DOMAIN_ID": str(self.domain_id),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "ROS_LOCALHOST_ONLY": "1",
            "RMW_IMPLEMENTATION": env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp"),
            "PYTHONUNBUFFERED": "1",
            # The scripts import the test helpers (stub_engine, polling) by name.
            "PYTHONPATH": os.pathsep.join(p for p in (os.path.dirname(os.path.abspath(__file__)),
                                                      env.get("PYTHONPATH", "")) if p),
        })
        return env

    def run_python(self, code: str, timeout: float = 120.0, args: list[str] | None = None) -> subprocess.CompletedProcess:
        """Run ``code`` with this interpreter inside the namespace; returns the completed process."""
        script = textwrap.dedent(code)
        inner = 'ip link set lo up 2>/dev/null || true; exec "$0" -c "$1" "${@:2}"'
        cmd = ["unshare", "-rn", "bash", "-c", inner, sys.executable, script, *(args or [])]
        return subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=timeout)

    def check_python(self, code: str, timeout: float = 120.0, args: list[str] | None = None) -> str:
        """Like :meth:`run_python` but raises with both streams when the code fails; returns stdout."""
        r = self.run_python(code, timeout, args)
        if r.returncode != 0:
            raise AssertionError(f"namespaced ROS code failed (rc={r.returncode})\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}")
        return r.stdout
