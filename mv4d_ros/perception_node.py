"""``ros2 run mv4d perception_node``: live occupancy, depth, points and flow from a camera rig.

A thin adapter. Messages become a :class:`FrameRecord` through ``mv4d_core.msgs``; the frame goes
through :class:`PerceptionPipeline` (the same code as ``mv4d infer``); the results go back to
messages through ``mv4d_core.msgs`` (point clouds, images) or plain rclpy classes (grids, markers,
diagnostics). See ``mv4d_ros/README.md`` for topics and parameters.

Design choices (why):

* A plain ``rclpy.node.Node``, not a lifecycle node: the engine is loaded and every parameter
  validated in the constructor, so a bad configuration refuses to start with the parameter
  named, and ``ros2 run`` / launch need no lifecycle transitions (launch_ros' lifecycle event
  handling is not available in this environment to test against).
* Sets are synchronized with ``mv4d_core.data.approx_sync.ApproximateTimeSynchronizer`` (the
  Python message_filters contract) on header stamps; CameraInfo is cached, never synchronized.
* Inference runs in the subscription callback of the set's last message, so sets that arrive
  while it runs wait in the subscriptions' keep-last queues (depth from ``input_qos``) and are
  processed oldest first.
* Nothing is computed for outputs nobody subscribes to; with no subscriber at all the engine is
  not run.
* Temporal fusion (the previous frame's volume warped by the ego motion, as ``mv4d infer`` does
  with a bag's ``/tf``) needs an ego pose per set: with ``use_odometry`` the node keeps recent
  ``~/input/odometry`` poses (:class:`mv4d_ros.pose_buffer.PoseBuffer`) and sets
  ``FrameRecord.T_world_base`` to the pose interpolated at the set's stamp. A set with no odometry
  within ``odometry_tolerance_s`` is still processed, without fusion (counted as
  ``odometry_missing``); the set after it starts a new sequence. Without ``use_odometry`` every
  set is processed on its own.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Vector3
from nav_msgs.msg import OccupancyGrid, Odometry
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import ColorRGBA, Float64
from visualization_msgs.msg import Marker, MarkerArray

from mv4d_core.data.approx_sync import ApproximateTimeSynchronizer
from mv4d_core.data.frame import FrameRecord
from mv4d_core.geometry.rig import Rig, RigError
from mv4d_core.engines import Engine, EngineError, create_engine
from mv4d_core.geometry.transforms import transform_points
from mv4d_core.models.inputs import resize_cameras
from mv4d_core.msgs import (ImageEncodingError, MessageError, MsgFactory, PointCloudError, any_image_to_rgb,
                            camera_info_to_camera, header_stamp_ns, read_xyz)
from mv4d_core.pipeline.config import PARAMETERS, ConfigError, PerceptionConfig
from mv4d_core.pipeline.messages import output_messages
from mv4d_core.pipeline.pipeline import FrameError, LateFrame, PerceptionPipeline, output_arrays
from mv4d_core.pipeline.stamps import CLOCK_JUMP_BACK, LATE, classify_stamp
from mv4d_ros.input_health import InputHealth
from mv4d_ros.pose_buffer import PoseBuffer
from mv4d_ros.qos import output_qos, qos_from_string
from mv4d_ros.tf_listener import StaticTfListener, tf2_msgs_available

NODE_NAME = "mv4d_perception"


class InputProblem(Exception):
    """A synchronized set cannot be used; ``cause`` is the diagnostics counter to bump."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(detail)
        self.cause = cause
        self.detail = detail


def declare_and_read_parameters(node: Node) -> PerceptionConfig:
    """Declare every parameter of the table (read-only, dynamically typed so the config's own
    validation produces the message) and validate them all."""
    values: dict[str, Any] = {}
    for spec in PARAMETERS:
        desc = ParameterDescriptor(description=spec.description, read_only=True, dynamic_typing=True)
        default = list(spec.default) if isinstance(spec.default, (list, tuple)) else spec.default
        values[spec.name] = node.declare_parameter(spec.name, default, desc).value
    return PerceptionConfig.from_dict(values)


class PerceptionNode(Node):
    """See the module docstring. ``engine`` may be injected (embedding, benchmarks)."""

    def __init__(self, *, engine: Engine | None = None, node_name: str = NODE_NAME, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        cfg = declare_and_read_parameters(self)
        self.config = cfg
        self.factory = MsgFactory.rclpy()
        self.health = InputHealth(self.get_logger().warning, cfg.log_throttle_s)
        self.rig = self._load_rig(cfg)
        self.tf = None
        if self.rig is None:
            if not tf2_msgs_available():
                raise ConfigError("rig_file", "empty, but tf2_msgs is not installed so /tf_static cannot be read; "
                                              "give a rig YAML")
            self.tf = StaticTfListener(self)
        try:
            engine = engine or create_engine(cfg.engine, cfg.checkpoint, cfg.device)
        except EngineError as e:
            raise ConfigError(e.parameter or "engine", str(e)) from None
        self.pipeline = PerceptionPipeline(engine, cfg, temporal=cfg.use_odometry)
        self.poses = PoseBuffer(int(round(cfg.odometry_tolerance_s * 1e9)))
        self._odometry_received = 0
        self.model_hw = self.pipeline.engine.spec.image_hw
        self.camera_infos: dict[str, Any] = {}
        self._extrinsics: dict[str, np.ndarray] = {}
        self._last_stamp: dict[int, int] = {}
        self._sync_base = {"complete": 0, "unmatched": 0, "dropped": 0}
        self._sync_resets = 0
        self._processed = 0
        self._skipped_idle = 0
        self._last_processing_ms = float("nan")
        self._last_latency_ms = float("nan")
        self._new_sync()
        self._make_publishers()
        self._make_subscriptions()
        self._diag_timer = self.create_timer(cfg.diagnostics_period_s, self.publish_diagnostics)
        self.get_logger().info(
            f"mv4d perception ready: engine {self.pipeline.engine.spec.name}, cameras {list(cfg.camera_names)}, "
            f"model input {self.model_hw[1]}x{self.model_hw[0]}, rig from "
            f"{cfg.rig_file or 'CameraInfo + /tf_static'}, input QoS {cfg.input_qos}")

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _load_rig(cfg: PerceptionConfig) -> Rig | None:
        if not cfg.rig_file:
            return None
        try:
            rig = Rig.from_yaml(cfg.rig_file)
        except RigError as e:
            raise ConfigError("rig_file", str(e)) from None
        missing = [c for c in cfg.camera_names if c not in rig.camera_names]
        if missing:
            raise ConfigError("camera_names", f"cameras {missing} are not in rig_file {cfg.rig_file} "
                                              f"(it has {rig.camera_names})")
        return rig

    def _new_sync(self) -> None:
        n = len(self.config.camera_names) + (1 if self.config.use_lidar else 0)
        old = getattr(self, "sync", None)
        if old is not None:
            c = old.counters
            self._sync_base["complete"] += c.emitted
            self._sync_base["unmatched"] += c.partial_sets
            # Evicted messages and those still waiting when the synchronizer is replaced never
            # became part of a set: both are drops.
            self._sync_base["dropped"] += c.dropped_by_eviction + sum(old.pending())
        self.sync = ApproximateTimeSynchronizer(n, self.config.sync.queue_size, self.config.sync.slop_s)

    def _make_publishers(self) -> None:
        q = output_qos()
        cfg = self.config
        self.pubs: dict[str, Any] = {}
        if cfg.publish.occupancy:
            self.pubs["occupancy"] = self.create_publisher(PointCloud2, "~/output/occupancy", q)
        if cfg.publish.points:
            self.pubs["points"] = self.create_publisher(PointCloud2, "~/output/points", q)
        if cfg.publish.flow:
            self.pubs["flow"] = self.create_publisher(PointCloud2, "~/output/flow", q)
        if cfg.publish.bev:
            self.pubs["bev"] = self.create_publisher(OccupancyGrid, "~/output/occupancy_bev", q)
        if cfg.publish.markers:
            self.pubs["markers"] = self.create_publisher(MarkerArray, "~/output/occupancy_markers", q)
        self.depth_pubs: dict[str, tuple[Any, Any]] = {}
        if cfg.publish.depth:
            for cam in cfg.camera_names:
                self.depth_pubs[cam] = (self.create_publisher(Image, f"~/output/depth/{cam}", q),
                                        self.create_publisher(CameraInfo, f"~/output/depth/{cam}/camera_info", q))
        self._by_output_name = {{"bev": "occupancy_bev"}.get(k, k): p for k, p in self.pubs.items()}
        for cam, (img_pub, info_pub) in self.depth_pubs.items():
            self._by_output_name[f"depth/{cam}"] = img_pub
            self._by_output_name[f"depth/{cam}/camera_info"] = info_pub
        self.pub_processing_ms = self.create_publisher(Float64, "~/debug/processing_time_ms", q)
        self.pub_latency_ms = self.create_publisher(Float64, "~/debug/pipeline_latency_ms", q)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))

    def _make_subscriptions(self) -> None:
        cfg = self.config
        q = qos_from_string(cfg.input_qos)
        image_type = CompressedImage if cfg.image_transport == "compressed" else Image
        self.subs = []
        for i, cam in enumerate(cfg.camera_names):
            self.subs.append(self.create_subscription(
                image_type, f"~/input/{cam}/image", lambda m, i=i: self._on_input(i, m), q))
            if self.rig is None:
                self.subs.append(self.create_subscription(
                    CameraInfo, f"~/input/{cam}/camera_info", lambda m, c=cam: self._on_camera_info(c, m), q))
        if cfg.use_lidar:
            n = len(cfg.camera_names)
            self.subs.append(self.create_subscription(PointCloud2, "~/input/lidar",
                                                      lambda m: self._on_input(n, m), q))
        if cfg.use_odometry:
            self.subs.append(self.create_subscription(Odometry, "~/input/odometry", self._on_odometry, q))

    # ------------------------------------------------------------------ inputs
    def _input_name(self, index: int) -> str:
        names = self.config.camera_names
        return names[index] if index < len(names) else "lidar"

    def _on_camera_info(self, cam: str, msg) -> None:
        self.camera_infos[cam] = msg

    def _on_odometry(self, msg) -> None:
        try:
            self.poses.add_odometry(msg)
        except MessageError as e:  # TransformError (non-finite pose) and bad stamps
            self.health.report("bad_odometry", f"odometry: {e}")
            return
        self._odometry_received += 1

    def _on_input(self, index: int, msg) -> None:
        try:
            stamp = header_stamp_ns(msg)
        except MessageError as e:
            self.health.report("bad_header", f"{self._input_name(index)}: {e}")
            return
        last = self._last_stamp.get(index)
        order = classify_stamp(last, stamp, self.config.max_clock_jump_s)
        if order == LATE:
            self.health.report("late", f"{self._input_name(index)}: stamp {(last - stamp) * 1e-9:.3f} s older than "
                                       "the newest on this input; message dropped")
            return
        if order == CLOCK_JUMP_BACK:
            # A looping bag or a restarted clock: stale sets would pair old and new messages.
            self.health.report(CLOCK_JUMP_BACK, f"{self._input_name(index)}: stamp went back "
                                                f"{(last - stamp) * 1e-9:.3f} s; sync and temporal state reset")
            self._new_sync()
            self._sync_resets += 1
            self.pipeline.reset(CLOCK_JUMP_BACK)
            self._last_stamp.clear()
        self._last_stamp[index] = stamp
        msgs = self.sync.add(index, msg, stamp)
        if msgs is not None:
            self._on_set(msgs)

    def _wanted_outputs(self) -> set[str]:
        want = {k for k, p in self.pubs.items() if p.get_subscription_count() > 0}
        if any(p.get_subscription_count() > 0 for p, _ in self.depth_pubs.values()):
            want.add("depth")
        return want

    def _camera_model(self, cam: str) -> tuple[Any, str, np.ndarray]:
        """(intrinsics at the sensor size, optical frame id, T_base_cam) for one camera."""
        if self.rig is not None:
            spec = self.rig.camera(cam)
            return spec.camera, spec.frame_id, spec.T_base_cam
        info = self.camera_infos.get(cam)
        if info is None:
            raise InputProblem("camera_info_missing", f"{cam}: no CameraInfo received yet on ~/input/{cam}/camera_info")
        try:
            camera, frame = camera_info_to_camera(info)
        except MessageError as e:
            raise InputProblem("bad_camera_info", f"{cam}: {e}") from None
        T = self._extrinsics.get(frame)
        if T is None:
            T = self.tf.lookup(self.config.base_frame, frame) if self.tf is not None else None
            if T is None:
                raise InputProblem("tf_missing", f"{cam}: no /tf_static transform {self.config.base_frame} <- {frame}")
            self._extrinsics[frame] = T
        return camera, frame, T

    def _lidar_points(self, msg) -> np.ndarray | None:
        try:
            cloud = read_xyz(msg)
        except (PointCloudError, MessageError) as e:
            self.health.report("bad_lidar", f"lidar: {e}; set processed without LiDAR")
            return None
        if cloud.num_nonfinite:
            self.health.report("lidar_nonfinite_points", f"lidar: {cloud.num_nonfinite} of {cloud.num_total} points "
                                                         f"are NaN/inf (dropped)", n=1)
        frame = msg.header.frame_id
        if self.rig is not None and self.rig.lidar is not None and frame in (self.rig.lidar.frame_id, ""):
            T = self.rig.lidar.T_base_lidar
        elif frame == self.config.base_frame:
            T = np.eye(4)
        else:
            T = self.tf.lookup(self.config.base_frame, frame) if self.tf is not None else None
            if T is None:
                self.health.report("lidar_tf_missing", f"lidar: no transform {self.config.base_frame} <- {frame!r}")
                return None
        return transform_points(T, cloud.xyz.astype(np.float64)).astype(np.float32)

    def frame_from_messages(self, msgs) -> tuple[FrameRecord, list[tuple[str, int]]]:
        """Synchronized messages -> FrameRecord at the model image size (cameras of a rig may differ in
        size; each goes through the pipeline's resize rule), plus (optical frame, stamp) per camera.
        Raises :class:`InputProblem` naming the cause."""
        cfg = self.config
        h_m, w_m = self.model_hw
        images, Ks, Ts, meta = [], [], [], []
        for i, cam in enumerate(cfg.camera_names):
            msg = msgs[i]
            camera, frame, T = self._camera_model(cam)
            try:
                rgb = any_image_to_rgb(msg)
            except ImageEncodingError as e:
                raise InputProblem("bad_encoding", f"{cam}: {e}") from None
            except MessageError as e:
                raise InputProblem("bad_image", f"{cam}: {e}") from None
            h, w = rgb.shape[:2]
            if (w, h) != (camera.width, camera.height):
                raise InputProblem("image_size_mismatch", f"{cam}: image is {w}x{h} but its calibration is "
                                                          f"{camera.width}x{camera.height}")
            rgb_m, K_m = resize_cameras(rgb[None], camera.K[None], h_m, w_m)
            images.append(rgb_m[0])
            Ks.append(K_m[0])
            Ts.append(T)
            meta.append((frame, header_stamp_ns(msg)))
        stamps = np.array([s for _, s in meta], np.int64)
        # Set stamp as in mv4d_core.data.rosbag_io.read_frames: the LiDAR's when synchronized with
        # one, else the first camera's; so live and offline outputs carry the same stamps.
        stamp = int(stamps[0])
        lidar = None
        if cfg.use_lidar:
            lidar_msg = msgs[len(cfg.camera_names)]
            stamp = header_stamp_ns(lidar_msg)
            lidar = self._lidar_points(lidar_msg)
        frame = FrameRecord(stamp, list(cfg.camera_names), np.stack(images), np.stack(Ks), np.stack(Ts),
                            lidar_xyz=lidar, camera_stamps_ns=stamps, source="ros")
        return frame, meta

    def ego_pose(self, frame: FrameRecord) -> bool:
        """Set ``frame.T_world_base`` from the odometry buffer; False (counted, logged) when there is
        no pose at the set's stamp: the set is then processed without temporal fusion."""
        if not self.config.use_odometry:
            return False
        found = self.poses.lookup(frame.stamp_ns)
        if found is None:
            newest = self.poses.newest_ns
            where = ("none received yet" if newest is None else
                     f"newest odometry stamp {newest} ns is {(frame.stamp_ns - newest) * 1e-9:+.3f} s away")
            self.health.report("odometry_missing",
                               f"no ~/input/odometry pose within {self.config.odometry_tolerance_s} s of set "
                               f"{frame.stamp_ns} ({where}); processed without temporal fusion")
            return False
        frame.T_world_base = found.T_world_base
        return True

    # ------------------------------------------------------------------ processing
    def _on_set(self, msgs) -> None:
        t0 = time.perf_counter()
        want = self._wanted_outputs()
        if not want:
            self._skipped_idle += 1
            return
        try:
            frame, meta = self.frame_from_messages(msgs)
            out = self.pipeline.process(frame, pose_known=self.ego_pose(frame))
        except InputProblem as e:
            self.health.report(e.cause, e.detail)
            return
        except LateFrame as e:
            self.health.report("late", str(e))
            return
        except FrameError as e:
            self.health.report("bad_frame", str(e))
            return
        except Exception as e:  # noqa: BLE001 - the node must survive an engine failure on odd input
            self.health.report("engine_error", f"{type(e).__name__}: {e}")
            return
        arrays = output_arrays(out, self.config, want)
        self._publish(out, arrays, frame, meta)
        self._processed += 1
        self._last_processing_ms = (time.perf_counter() - t0) * 1e3
        self._last_latency_ms = (self.get_clock().now().nanoseconds - frame.stamp_ns) * 1e-6
        self.pub_processing_ms.publish(Float64(data=float(self._last_processing_ms)))
        self.pub_latency_ms.publish(Float64(data=float(self._last_latency_ms)))

    def _publish(self, out, arrays, frame: FrameRecord, meta) -> None:
        for name, msg in output_messages(arrays, out, frame.stamp_ns, self.config.base_frame, meta, self.factory):
            pub = self._by_output_name.get(name)
            if pub is not None and pub.get_subscription_count() > 0:
                pub.publish(msg)
        if arrays.markers is not None:
            self.pubs["markers"].publish(self._marker_array(arrays.markers, out.grid.voxel_size, frame.stamp_ns))

    def _marker_array(self, cubes, voxel_size, stamp_ns: int) -> MarkerArray:
        header = self.factory.header(stamp_ns, self.config.base_frame)
        # DELETEALL first: RViz2 degrades when CUBE_LISTs are updated in place (ros2/rviz#631).
        markers = [Marker(header=header, ns="occupancy", id=0, action=Marker.DELETEALL)]
        scale = Vector3(x=voxel_size[0] - 1e-3, y=voxel_size[1] - 1e-3, z=voxel_size[2] - 1e-3)
        for c in cubes:
            r, g, b, a = (float(v) for v in c.color_rgba)
            m = Marker(header=header, ns="occupancy", id=int(c.layer), type=Marker.CUBE_LIST, action=Marker.ADD,
                       scale=scale, color=ColorRGBA(r=r, g=g, b=b, a=a))
            m.pose.orientation.w = 1.0
            m.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in c.points]
            markers.append(m)
        return MarkerArray(markers=markers)

    # ------------------------------------------------------------------ diagnostics
    def counters(self) -> dict[str, int]:
        c = self.sync.counters
        out = {
            "sets_complete": self._sync_base["complete"] + c.emitted,
            # Arrivals that did not (yet) complete a set; grows by N-1 per complete set as well.
            "arrivals_unmatched": self._sync_base["unmatched"] + c.partial_sets,
            "messages_dropped": self._sync_base["dropped"] + c.dropped_by_eviction,
            "sync_resets": self._sync_resets,
            "frames_processed": self._processed,
            "sets_skipped_no_subscriber": self._skipped_idle,
            "frames_temporal_fused": self.pipeline.stats.temporal_frames,
        }
        if self.config.use_odometry:
            out["odometry_received"] = self._odometry_received
        out.update({f"drop_{k}": v for k, v in self.health.counts.items()})
        return out

    def publish_diagnostics(self) -> None:
        counts = self.counters()
        pending = dict(zip([self._input_name(i) for i in range(self.sync.num_inputs)], self.sync.pending()))
        never = [self._input_name(i) for i in range(self.sync.num_inputs) if i not in self._last_stamp]
        level, message = DiagnosticStatus.OK, "ok"
        problems = {k: v for k, v in counts.items() if k.startswith("drop_") and v}
        if never and self._last_stamp:
            level, message = DiagnosticStatus.WARN, f"no messages from {never}"
        elif problems:
            level = DiagnosticStatus.WARN
            message = "bad input: " + ", ".join(f"{k[5:]}={v}" for k, v in problems.items())
        elif not self._last_stamp:
            message = "waiting for input"
        values = {**counts, **{f"pending_{k}": v for k, v in pending.items()},
                  "last_processing_ms": round(self._last_processing_ms, 3),
                  "last_latency_ms": round(self._last_latency_ms, 3)}
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: perception", message=message,
                                  hardware_id="mv4d",
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(arr)


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    try:
        node = PerceptionNode()
    except ConfigError as e:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"refusing to start: {e}")
        rclpy.try_shutdown()
        return 2
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
