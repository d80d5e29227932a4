"""Data: frame records, synthetic world, rosbag2 I/O, time sync, nuScenes and Argoverse 2 loaders."""

from mv4d_core.data.frame import FrameRecord, GroundTruth

__all__ = ["FrameRecord", "GroundTruth"]
