"""Read the results back from a bag written by ``mv4d infer`` (what RViz would show), per frame.

The demo evaluates and draws exactly what the product wrote, not a second in-process run: the
occupancy, flow and points PointCloud2 topics and the per-camera 32FC1 depth images are decoded
back to arrays. Occupancy and flow clouds hold voxel centres, so they are scattered back onto the
model's :class:`VoxelGridSpec` (taken from the checkpoint). Voxels missing from the flow cloud
(below the published ``min_speed_mps`` or not occupied) read as zero velocity, as a subscriber
would read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mv4d_core.geometry.voxel_grid import VoxelGridSpec


@dataclass
class BagOutputs:
    """Decoded outputs of one frame (base_link).

    * ``occupied`` (X, Y, Z) bool, ``prob`` (X, Y, Z) float32 (0 where not published); ``flow_mps`` (X, Y, Z, 3) float32 (0 where not published).
    * ``depth_m``: camera name -> (h, w) float32 (NaN invalid); ``depth_K``: camera -> (3, 3).
    * ``points_xyz`` (P, 3) float32, ``points_rgb`` (P, 3) uint8.
    """

    stamp_ns: int
    occupied: np.ndarray | None = None
    prob: np.ndarray | None = None
    flow_mps: np.ndarray | None = None
    depth_m: dict[str, np.ndarray] = field(default_factory=dict)
    depth_K: dict[str, np.ndarray] = field(default_factory=dict)
    points_xyz: np.ndarray | None = None
    points_rgb: np.ndarray | None = None


def _grid_index(grid: VoxelGridSpec, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer voxel indices ``(M, 3)`` of voxel centres ``xyz`` and a mask of those inside the grid."""
    idx = np.floor(grid.metric_to_index(np.asarray(xyz, np.float64)) + 0.5).astype(np.int64)
    inside = np.all((idx >= 0) & (idx < np.asarray(grid.shape)), axis=1)
    return idx, inside


def scatter_occupancy(cloud: np.ndarray, grid: VoxelGridSpec) -> tuple[np.ndarray, np.ndarray]:
    """Structured occupancy cloud (x, y, z, prob) -> ``(occupied, prob)`` volumes."""
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], -1)
    idx, inside = _grid_index(grid, xyz)
    idx = idx[inside]
    occupied = np.zeros(grid.shape, bool)
    prob = np.zeros(grid.shape, np.float32)
    occupied[tuple(idx.T)] = True
    prob[tuple(idx.T)] = np.asarray(cloud["prob"])[inside]
    return occupied, prob


def scatter_flow(cloud: np.ndarray, grid: VoxelGridSpec) -> np.ndarray:
    """Structured flow cloud (x, y, z, vx, vy, vz) -> ``(X, Y, Z, 3)`` m/s volume (0 elsewhere)."""
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], -1)
    idx, inside = _grid_index(grid, xyz)
    flow = np.zeros(grid.shape + (3,), np.float32)
    v = np.stack([cloud["vx"], cloud["vy"], cloud["vz"]], -1)[inside]
    flow[tuple(idx[inside].T)] = v
    return flow


@dataclass
class OutputsBag:
    """All decoded outputs of one bag: base_link outputs by frame stamp, depth by (camera, camera stamp)."""

    frames: dict[int, BagOutputs]
    depth: dict[tuple[str, int], np.ndarray]
    depth_K: dict[str, np.ndarray]

    def for_frame(self, frame) -> BagOutputs | None:
        """The outputs of ``frame`` (a :class:`FrameRecord` read from the same bag) with its depth maps
        attached (camera j's image carries stamp ``frame.camera_stamps_ns[j]``); None if it has none."""
        out = self.frames.get(int(frame.stamp_ns))
        if out is None:
            return None
        stamps = (frame.camera_stamps_ns if frame.camera_stamps_ns is not None
                  else [frame.stamp_ns] * frame.num_cameras)
        for cam, s in zip(frame.camera_names, stamps):
            d = self.depth.get((cam, int(s)))
            if d is not None:
                out.depth_m[cam] = d
                if cam in self.depth_K:
                    out.depth_K[cam] = self.depth_K[cam]
        return out


def read_outputs(path: str | Path, grid: VoxelGridSpec, node_name: str = "mv4d_perception") -> OutputsBag:
    """Decode every ``/<node_name>/output/...`` message of an ``mv4d infer`` bag. Raises
    ``ValueError`` when the bag has no ``/<node_name>/output/occupancy`` topic."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    from mv4d_core.msgs.camera_info import camera_info_to_camera
    from mv4d_core.msgs.image import image_to_depth_m
    from mv4d_core.msgs.pointcloud2 import read_points
    from mv4d_core.msgs.stamps import header_stamp_ns
    from mv4d_core.pipeline.postprocess import unpack_rgb

    prefix = f"/{node_name}/output/"
    ts = get_typestore(Stores.ROS2_HUMBLE)
    bag = OutputsBag({}, {}, {})
    with Reader(path) as reader:
        conns = [c for c in reader.connections if c.topic.startswith(prefix)]
        if not any(c.topic == prefix + "occupancy" for c in conns):
            raise ValueError(f"{path}: no topic {prefix}occupancy (is this a bag written by `mv4d infer`?)")
        for c, _t, raw in reader.messages(connections=conns):
            msg = ts.deserialize_cdr(raw, c.msgtype)
            stamp = header_stamp_ns(msg)
            name = c.topic[len(prefix):]
            if name.startswith("depth/"):
                cam = name[len("depth/"):]
                if cam.endswith("/camera_info"):
                    bag.depth_K[cam[: -len("/camera_info")]] = camera_info_to_camera(msg)[0].K
                else:
                    bag.depth[(cam, stamp)] = image_to_depth_m(msg).copy()
                continue
            out = bag.frames.setdefault(stamp, BagOutputs(stamp))
            if name == "occupancy":
                out.occupied, out.prob = scatter_occupancy(read_points(msg), grid)
            elif name == "flow":
                out.flow_mps = scatter_flow(read_points(msg), grid)
            elif name == "points":
                pts = read_points(msg)
                out.points_xyz = np.stack([pts["x"], pts["y"], pts["z"]], -1).astype(np.float32)
                out.points_rgb = unpack_rgb(np.asarray(pts["rgb"]))
    return bag
