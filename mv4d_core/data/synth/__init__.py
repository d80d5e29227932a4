"""The embedded default dataset: a procedural street rendered exactly by analytic ray casting.

``synthetic_rig(size)`` gives the 6-camera + LiDAR rig, ``generate_sequence`` / ``iter_sequence``
the frames with full :class:`~mv4d_core.data.frame.GroundTruth`, ``save_gt_sidecar`` /
``load_gt_sidecar`` the ``gt.npz`` written next to a synthetic rosbag by ``mv4d synth``.
"""

from mv4d_core.data.synth.rig import LIDAR_PATTERNS, SIZES, LidarPattern, synthetic_rig
from mv4d_core.data.synth.sequence import DEFAULT_DT_S, START_STAMP_NS, generate_sequence, iter_sequence, render_frame
from mv4d_core.data.synth.sidecar import load_gt_sidecar, save_gt_sidecar
from mv4d_core.data.synth.world import World, make_world

__all__ = ["synthetic_rig", "generate_sequence", "iter_sequence", "render_frame", "make_world", "World",
           "load_gt_sidecar", "save_gt_sidecar", "LidarPattern", "LIDAR_PATTERNS", "SIZES", "DEFAULT_DT_S",
           "START_STAMP_NS"]
