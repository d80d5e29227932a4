"""Geometry: SE(3)/quaternions, pinhole cameras, voxel grids, the sensor rig."""

from mv4d_core.geometry.camera import R_BODY_OPTICAL, T_BODY_OPTICAL, PinholeCamera, project, unproject
from mv4d_core.geometry.rig import NUSCENES_CAMERAS, CameraSpec, LidarSpec, Rig, RigError
from mv4d_core.geometry.transforms import (
    invert_transform,
    make_transform,
    quat_to_rotmat,
    quat_wxyz_to_xyzw,
    quat_xyzw_to_wxyz,
    rotmat_to_quat,
    transform_from_quat,
    transform_points,
    transform_to_quat,
)
from mv4d_core.geometry.voxel_grid import OCC3D, TINY, VoxelGridSpec

__all__ = [
    "R_BODY_OPTICAL", "T_BODY_OPTICAL", "PinholeCamera", "project", "unproject",
    "NUSCENES_CAMERAS", "CameraSpec", "LidarSpec", "Rig", "RigError",
    "invert_transform", "make_transform", "quat_to_rotmat", "quat_wxyz_to_xyzw", "quat_xyzw_to_wxyz",
    "rotmat_to_quat", "transform_from_quat", "transform_points", "transform_to_quat",
    "OCC3D", "TINY", "VoxelGridSpec",
]
