"""Build ROS messages for either backend: rosbags dataclasses or real rclpy message classes.

Reading never needs a factory (conversions go by field name). Writing does, because the two
backends differ in the container they expect for arrays: rosbags wants numpy arrays for every
array field and every field passed explicitly; rclpy wants ``array.array`` for unbounded
sequences (a numpy array there is validated element by element, which is slow) and numpy for
fixed-size arrays. ``MsgFactory.rclpy()`` imports the rclpy message modules only when called,
so ``mv4d_core`` never imports rclpy at import time.
"""

from __future__ import annotations

import array
import functools
import importlib
from typing import Any, Callable, Sequence

import numpy as np

from mv4d_core.msgs.errors import MessageError
from mv4d_core.msgs.stamps import ns_to_sec_nanosec


class MsgFactory:
    """Constructors for the message types mv4d reads and writes.

    Use :meth:`rosbags` (bag I/O, tests) or :meth:`rclpy` (nodes). Arguments are numpy-friendly;
    quaternions are ROS order ``[x, y, z, w]`` at this layer.
    """

    def __init__(self, backend: str, resolve: Callable[[str], type], name: str) -> None:
        self.backend = backend  # "rosbags" | "rclpy"
        self._resolve = resolve
        self.name = name

    # ------------------------------------------------------------------ backends
    @classmethod
    def rosbags(cls, store=None) -> "MsgFactory":
        """Factory over a rosbags typestore (default ``Stores.ROS2_HUMBLE``; Humble and Jazzy agree
        on every type built here)."""
        return _rosbags_factory(str(store) if store is not None else None)

    @classmethod
    def rclpy(cls) -> "MsgFactory":
        """Factory over the installed rclpy message packages (imported now, lazily)."""
        def resolve(typename: str) -> type:
            pkg, _, name = typename.split("/")
            try:
                module = importlib.import_module(f"{pkg}.msg")
            except ImportError as e:
                raise MessageError(f"rclpy message package {pkg!r} is not importable ({e}); "
                                   f"cannot build {typename}") from None
            return getattr(module, name)
        return cls("rclpy", functools.lru_cache(maxsize=None)(resolve), "rclpy")

    def msg_class(self, typename: str) -> type:
        """The message class for ``pkg/msg/Name``."""
        return self._resolve(typename)

    def new(self, typename: str, **fields: Any):
        return self._resolve(typename)(**fields)

    # ------------------------------------------------------------------ array containers
    def u8_seq(self, data) -> Any:
        """Unbounded ``uint8[]`` field value from bytes-like / uint8 array data."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = np.frombuffer(data, dtype=np.uint8)
        buf = np.ascontiguousarray(np.asarray(data, dtype=np.uint8)).ravel()
        if self.backend == "rclpy":
            out = array.array("B")
            out.frombytes(buf.tobytes())
            return out
        return buf

    def f64_seq(self, values) -> Any:
        """Unbounded ``float64[]`` field value."""
        a = np.ascontiguousarray(np.asarray(values, dtype=np.float64).ravel())
        if self.backend == "rclpy":
            out = array.array("d")
            out.frombytes(a.tobytes())
            return out
        return a

    def f64_fixed(self, values, n: int) -> np.ndarray:
        """Fixed-size ``float64[n]`` field value (numpy in both backends)."""
        a = np.asarray(values, dtype=np.float64).ravel()
        if a.size != n:
            raise MessageError(f"expected {n} float64 values, got {a.size}")
        return a.copy()

    # ------------------------------------------------------------------ std / builtin
    def time(self, stamp_ns: int):
        sec, nsec = ns_to_sec_nanosec(stamp_ns)
        return self.new("builtin_interfaces/msg/Time", sec=sec, nanosec=nsec)

    def header(self, stamp_ns: int = 0, frame_id: str = ""):
        return self.new("std_msgs/msg/Header", stamp=self.time(stamp_ns), frame_id=str(frame_id))

    # ------------------------------------------------------------------ sensor_msgs
    def image(self, header, height: int, width: int, encoding: str, is_bigendian: int, step: int, data):
        return self.new("sensor_msgs/msg/Image", header=header, height=int(height), width=int(width),
                        encoding=str(encoding), is_bigendian=int(is_bigendian), step=int(step), data=self.u8_seq(data))

    def compressed_image(self, header, format: str, data):  # noqa: A002 - ROS field name
        return self.new("sensor_msgs/msg/CompressedImage", header=header, format=str(format), data=self.u8_seq(data))

    def region_of_interest(self, x_offset=0, y_offset=0, height=0, width=0, do_rectify=False):
        return self.new("sensor_msgs/msg/RegionOfInterest", x_offset=int(x_offset), y_offset=int(y_offset),
                        height=int(height), width=int(width), do_rectify=bool(do_rectify))

    def camera_info(self, header, height: int, width: int, distortion_model: str, d, k, r, p,
                    binning_x: int = 0, binning_y: int = 0, roi=None):
        return self.new("sensor_msgs/msg/CameraInfo", header=header, height=int(height), width=int(width),
                        distortion_model=str(distortion_model), d=self.f64_seq(d), k=self.f64_fixed(k, 9),
                        r=self.f64_fixed(r, 9), p=self.f64_fixed(p, 12), binning_x=int(binning_x),
                        binning_y=int(binning_y), roi=roi if roi is not None else self.region_of_interest())

    def point_field(self, name: str, offset: int, datatype: int, count: int = 1):
        return self.new("sensor_msgs/msg/PointField", name=str(name), offset=int(offset), datatype=int(datatype),
                        count=int(count))

    def pointcloud2(self, header, height: int, width: int, fields: Sequence, is_bigendian: bool, point_step: int,
                    row_step: int, data, is_dense: bool):
        return self.new("sensor_msgs/msg/PointCloud2", header=header, height=int(height), width=int(width),
                        fields=list(fields), is_bigendian=bool(is_bigendian), point_step=int(point_step),
                        row_step=int(row_step), data=self.u8_seq(data), is_dense=bool(is_dense))

    # ------------------------------------------------------------------ geometry / tf / nav
    def vector3(self, xyz):
        x, y, z = (float(v) for v in np.asarray(xyz, dtype=np.float64).ravel()[:3])
        return self.new("geometry_msgs/msg/Vector3", x=x, y=y, z=z)

    def point(self, xyz):
        x, y, z = (float(v) for v in np.asarray(xyz, dtype=np.float64).ravel()[:3])
        return self.new("geometry_msgs/msg/Point", x=x, y=y, z=z)

    def quaternion(self, xyzw):
        x, y, z, w = (float(v) for v in np.asarray(xyzw, dtype=np.float64).ravel()[:4])
        return self.new("geometry_msgs/msg/Quaternion", x=x, y=y, z=z, w=w)

    def transform_stamped(self, header, child_frame_id: str, translation, rotation_xyzw):
        tf = self.new("geometry_msgs/msg/Transform", translation=self.vector3(translation),
                      rotation=self.quaternion(rotation_xyzw))
        return self.new("geometry_msgs/msg/TransformStamped", header=header, child_frame_id=str(child_frame_id),
                        transform=tf)

    def tf_message(self, transforms: Sequence):
        return self.new("tf2_msgs/msg/TFMessage", transforms=list(transforms))

    def odometry(self, header, child_frame_id: str, position, orientation_xyzw, linear=(0, 0, 0),
                 angular=(0, 0, 0), pose_covariance=None, twist_covariance=None):
        pose = self.new("geometry_msgs/msg/Pose", position=self.point(position),
                        orientation=self.quaternion(orientation_xyzw))
        pwc = self.new("geometry_msgs/msg/PoseWithCovariance", pose=pose,
                       covariance=self.f64_fixed(np.zeros(36) if pose_covariance is None else pose_covariance, 36))
        twist = self.new("geometry_msgs/msg/Twist", linear=self.vector3(linear), angular=self.vector3(angular))
        twc = self.new("geometry_msgs/msg/TwistWithCovariance", twist=twist,
                       covariance=self.f64_fixed(np.zeros(36) if twist_covariance is None else twist_covariance, 36))
        return self.new("nav_msgs/msg/Odometry", header=header, child_frame_id=str(child_frame_id), pose=pwc, twist=twc)


@functools.lru_cache(maxsize=None)
def _rosbags_factory(store_name: str | None) -> MsgFactory:
    from rosbags.typesys import Stores, get_typestore

    store = Stores.ROS2_HUMBLE if store_name is None else _store_from_name(store_name, Stores)
    ts = get_typestore(store)

    def resolve(typename: str) -> type:
        try:
            return ts.types[typename]
        except KeyError:
            raise MessageError(f"typestore {store.name} has no message type {typename}") from None

    factory = MsgFactory("rosbags", resolve, f"rosbags:{store.name}")
    factory.typestore = ts  # type: ignore[attr-defined]  # for serialize_cdr in bag writers and tests
    return factory


def _store_from_name(name: str, Stores):
    for s in Stores:
        if name in (str(s), s.name, s.value):
            return s
    raise MessageError(f"unknown rosbags typestore {name!r}")


def default_factory() -> MsgFactory:
    """The rosbags Humble factory (used when a caller passes ``factory=None``)."""
    return MsgFactory.rosbags()
