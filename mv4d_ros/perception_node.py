"""``ros2 run mv4d perception_node``: live occupancy, depth, points and flow from a camera rig.

A thin adapter. Messages become a :class:`FrameRecord` through ``mv4d_core.msgs``; the frame goes
through :class:`PerceptionPipeline` (the same code as ``mv4d infer``); the results go back to
messages through ``mv4d_core.msgs`` (point clouds, images) or plain rclpy classes (grids, markers,
diagnostics). See ``mv4d_ros/README.md`` for topics and parameters.

Design choices (why):

* **Newest-set scheduling.** Input callbacks only check stamps and feed the synchronizer
  (``mv4d_core.data.approx_sync.ApproximateTimeSynchronizer``, the Python message_filters contract);
  a complete set goes to one worker thread (:class:`mv4d_ros.scheduler.LatestSetWorker`) that
  always processes the newest complete set. Sets completed while it is busy replace each other and
  are counted (``superseded``), never queued: latency stays one processing time however slow the
  engine is against the sensor rate.
* **A single-threaded executor** (what :func:`main` spins): every callback is short (stamps, the
  synchronizer, buffers) and the engine runs on the worker thread, so poses keep arriving while a
  set is processed (a set waits at most ``odometry_wait_s`` for the pose at its stamp). More
  executor threads gain nothing, and rclpy's ``MultiThreadedExecutor`` busy-waits whenever a
  subscription with event handlers (every subscription has them) has data a pool thread has not
  yet taken: on 2 cores that spin took the GIL from the callbacks and lost messages
  (``test/test_node_scheduling.py``). The callback groups (inputs serial, as they share the
  synchronizer; odometry; ``/tf_static`` + the diagnostics timer) keep the node correct when it is
  co-hosted on a multi-threaded executor.
* **Strict parameters** (:mod:`mv4d_ros.parameters`): typed, described, range-checked, read-only;
  an override the node does not declare (a typo) refuses to start naming the closest known name.
* **Honest diagnostics** (:mod:`mv4d_ros.input_monitor`): one status per input (rate, age of the
  newest message, drops over the last ``diagnostics_window_s``), stale inputs named, WARN/ERROR
  computed from the window so they clear when it is healthy; cumulative counters stay as values.
* **Two node flavours, one core**: :class:`PerceptionNode` (plain: configured and active from the
  constructor, a bad configuration refuses to start) and :class:`LifecyclePerceptionNode`
  (``perception_node --lifecycle``: configure loads and validates the engine, activate creates
  subscriptions and publishers, deactivate stops processing, cleanup frees the engine).
* Nothing is computed for outputs nobody subscribes to; with no subscriber at all the engine is
  not run.
* Temporal fusion (the previous frame's volume warped by the ego motion, as ``mv4d infer`` does
  with a bag's ``/tf``) needs an ego pose per set: with ``use_odometry`` the node keeps recent
  ``~/input/odometry`` poses (:class:`mv4d_ros.pose_buffer.PoseBuffer`, interpolated, extrapolated
  at most ``odometry_tolerance_s``) and sets ``FrameRecord.T_world_base``. A set with no pose is
  still processed, without fusion (``odometry_missing``); the set after it starts a new sequence.
* LiDAR fusion: with ``use_lidar`` the cloud nearest to a camera set's stamp within
  ``sync.slop_s`` (:class:`mv4d_ros.lidar_buffer.LidarBuffer`) goes into the frame with its
  intensity, ring and time fields and the LiDAR origin ``T_base_lidar``, so a fusion engine
  (``engine.spec.lidar``) gets its LiDAR inputs from the pipeline; a set with no cloud near it is
  processed camera-only and counted (``lidar_unmatched``, ``lidar_missing``): the cameras alone
  make a set, so a stopped LiDAR never stops the node. An empty ``checkpoint`` takes the shipped
  fusion weights when there are some. A fusion model without ``use_lidar`` runs camera-only and
  says so.
* Cameras down, LiDAR up: once no camera set has completed for ``lidar_only_after_s``, a fusion
  model gets each cloud alone (its LiDAR branch: occupancy, flow and moving voxels, no depth),
  counted (``lidar_only_frames``) and named in ``/diagnostics``; the next complete set ends it.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Vector3
from nav_msgs.msg import OccupancyGrid, Odometry
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_policy_name_from_kind
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import ColorRGBA, Float64
from visualization_msgs.msg import Marker, MarkerArray

from mv4d_core.data.approx_sync import ApproximateTimeSynchronizer
from mv4d_core.data.frame import FrameRecord
from mv4d_core.engines import Engine, EngineError, create_engine
from mv4d_core.geometry.rig import Rig, RigError
from mv4d_core.geometry.transforms import transform_points
from mv4d_core.models.inputs import resize_cameras
from mv4d_core.msgs import (ImageEncodingError, MessageError, MsgFactory, PointCloudError, any_image_to_rgb,
                            camera_info_to_camera, header_stamp_ns, read_xyz)
from mv4d_core.pipeline.config import ConfigError, PerceptionConfig
from mv4d_core.pipeline.messages import output_messages
from mv4d_core.pipeline.pipeline import FrameError, LateFrame, PerceptionPipeline, output_arrays
from mv4d_core.pipeline.stamps import CLOCK_JUMP_BACK, LATE, classify_stamp
from mv4d_ros.input_health import InputHealth
from mv4d_ros.input_monitor import InputMonitor, assess
from mv4d_ros.lidar_buffer import LidarBuffer
from mv4d_ros.parameters import declare_and_read_parameters
from mv4d_ros.pose_buffer import PoseBuffer
from mv4d_ros.qos import output_qos, qos_from_string
from mv4d_ros.scheduler import LatestSetWorker
from mv4d_ros.tf_listener import StaticTfListener, tf2_msgs_available

NODE_NAME = "mv4d_perception"
#: Per-point fields of a LiDAR cloud kept for a fusion engine when the cloud has them.
LIDAR_FIELDS = ("intensity", "ring", "t")


class InputProblem(Exception):
    """A synchronized set cannot be used; ``cause`` is the diagnostics counter to bump."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(detail)
        self.cause = cause
        self.detail = detail


@dataclass(frozen=True)
class LidarOnly:
    """A cloud the worker processes without cameras (see ``lidar_only_after_s``)."""

    msg: Any


class _PerceptionCore:
    """Everything both node flavours share; they only differ in *when* the steps run:
    :meth:`_declare` (construction), :meth:`_configure`, :meth:`_activate`, :meth:`_deactivate`,
    :meth:`_cleanup`. Mixed into an ``rclpy`` ``Node`` / ``LifecycleNode``."""

    # ------------------------------------------------------------------ construction
    def _declare(self, engine: Engine | None, read_only: bool = True) -> None:
        self._injected_engine = engine
        self.config: PerceptionConfig = declare_and_read_parameters(self, read_only)
        self.factory = MsgFactory.rclpy()
        self.cb_inputs = MutuallyExclusiveCallbackGroup()
        self.cb_odometry = MutuallyExclusiveCallbackGroup()
        self.cb_aux = MutuallyExclusiveCallbackGroup()
        self.pipeline: PerceptionPipeline | None = None
        self.rig: Rig | None = None
        self.tf = None
        self.subs: list[Any] = []
        self.pubs: dict[str, Any] = {}
        self.depth_pubs: dict[str, tuple[Any, Any]] = {}
        self._by_output_name: dict[str, Any] = {}
        self._diag_timer = None
        self.worker: LatestSetWorker | None = None
        self.active = False
        self._notes: list[str] = []
        self._lost_event_supported: bool | None = None

    def _read_config(self) -> PerceptionConfig:
        """The current parameter values, validated (they can change while a lifecycle node is unconfigured)."""
        from mv4d_core.pipeline.config import PARAMETERS

        return PerceptionConfig.from_dict({p.name: self.get_parameter(p.name).value for p in PARAMETERS})

    # ------------------------------------------------------------------ configure / cleanup
    def _configure(self) -> None:
        """Rig, calibration sources, engine and pipeline; raises :class:`ConfigError` naming the parameter."""
        cfg = self.config = self._read_config()
        self.health = InputHealth(self.get_logger().warning, cfg.log_throttle_s, listener=self._on_problem)
        self.rig = self._load_rig(cfg)
        if self.rig is None:
            if not tf2_msgs_available():
                raise ConfigError("rig_file", "empty, but tf2_msgs is not installed so /tf_static cannot be read; "
                                              "give a rig YAML")
            self.tf = StaticTfListener(self, callback_group=self.cb_aux)
        engine = self._injected_engine
        if engine is None:
            try:
                engine = create_engine(cfg.engine, cfg.checkpoint, cfg.device, lidar=cfg.use_lidar)
            except EngineError as e:
                raise ConfigError(e.parameter or "engine", str(e)) from None
        self.pipeline = PerceptionPipeline(engine, cfg, temporal=cfg.use_odometry)
        self.model_hw = self.pipeline.engine.spec.image_hw
        self.model_takes_lidar = self.pipeline.engine.spec.lidar is not None
        self._notes = []
        if self.model_takes_lidar and not cfg.use_lidar:
            self._notes.append("the model takes the LiDAR but use_lidar is false: running camera-only")
            self.get_logger().warning(self._notes[-1] + " (set use_lidar: true and remap ~/input/lidar)")
        if cfg.use_lidar and not self.model_takes_lidar:
            # Not a fault (the cloud still sets the output stamps): said once, not a standing warning.
            self.get_logger().info(f"the engine {self.pipeline.engine.spec.name} is camera-only: ~/input/lidar "
                                   "clouds are synchronized but not used as a model input")
        self.poses = PoseBuffer(int(round(cfg.odometry_tolerance_s * 1e9)))
        self.camera_infos: dict[str, Any] = {}
        self._extrinsics: dict[str, np.ndarray] = {}
        self._reset_counters()

    def _reset_counters(self) -> None:
        cfg = self.config
        self.monitor = InputMonitor(cfg.diagnostics_window_s, cfg.input_timeout_s)
        for name in self.sync_input_names() + (["lidar"] if cfg.use_lidar else []):
            self.monitor.add_input(name, self._input_topic(name))
        self.lidar_buffer = LidarBuffer(cfg.sync.queue_size)
        self._lidar_unmatched = 0
        if cfg.use_odometry:
            self.monitor.add_input("odometry", "~/input/odometry")
        self._odometry_received = 0
        self._last_stamp: dict[int | str, int] = {}
        self._sync_base = {"complete": 0, "unmatched": 0, "dropped": 0}
        self._sync_resets = 0
        self._processed = 0
        self._skipped_idle = 0
        self._superseded_base = 0
        self._last_processing_ms = float("nan")
        self._last_latency_ms = float("nan")
        self._last_wait_ms = float("nan")
        self._last_arrival_age_ms = float("nan")
        self._generation_seen = 0
        self._lidar_only_ref_ns: int | None = None    # stamp of the last complete set (or first cloud)
        self.sync = None               # a new configuration starts its counters from zero
        self._new_sync()

    def _stop(self) -> None:
        """Deactivate if active, then clean up: every way out (destroy, shutdown, error) ends here."""
        if self.active:
            self._deactivate()
        self._cleanup()

    def _cleanup(self) -> None:
        if self.tf is not None:
            self.tf.destroy(self)
            self.tf = None
        self.pipeline = None
        self.rig = None

    # ------------------------------------------------------------------ activate / deactivate
    def _activate(self) -> None:
        self.monitor.restart()
        self.worker = LatestSetWorker(self._process_set, self._on_worker_error, name=f"{self.get_name()}_worker")
        self.worker.start()
        self._make_publishers()
        self._make_subscriptions()
        self._diag_timer = self.create_timer(self.config.diagnostics_period_s, self.publish_diagnostics,
                                             callback_group=self.cb_aux)
        self.active = True
        cfg = self.config
        self.get_logger().info(
            f"mv4d perception active: engine {self.pipeline.engine.spec.name}"
            f"{' (LiDAR fusion)' if self.model_takes_lidar else ''}, cameras {list(cfg.camera_names)}, "
            f"model input {self.model_hw[1]}x{self.model_hw[0]}, rig from "
            f"{cfg.rig_file or 'CameraInfo + /tf_static'}, input QoS {cfg.input_qos}")

    def _deactivate(self) -> None:
        self.active = False
        for s in self.subs:
            self.destroy_subscription(s)
        self.subs = []
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self.worker is not None:
            self._superseded_base += self.worker.superseded
            if not self.worker.stop(timeout_s=60.0):
                self.get_logger().warning("the set being processed did not finish within 60 s")
            self.worker = None
        for p in [*self.pubs.values(), *(x for pair in self.depth_pubs.values() for x in pair),
                  *[getattr(self, n, None) for n in ("pub_processing_ms", "pub_latency_ms", "pub_diag")]]:
            if p is not None:
                self.destroy_publisher(p)
        self.pubs, self.depth_pubs, self._by_output_name = {}, {}, {}
        self.pub_processing_ms = self.pub_latency_ms = self.pub_diag = None

    # ------------------------------------------------------------------ setup helpers
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

    def sync_input_names(self) -> list[str]:
        """The inputs a set needs: the cameras (a LiDAR cloud joins a set when one is near it, see
        :mod:`mv4d_ros.lidar_buffer`)."""
        return list(self.config.camera_names)

    def _input_topic(self, name: str) -> str:
        return f"~/input/{name}/image" if name in self.config.camera_names else f"~/input/{name}"

    def _new_sync(self) -> None:
        n = len(self.sync_input_names())
        old = getattr(self, "sync", None)
        if old is not None:
            c = old.counters
            self._sync_base["complete"] += c.emitted
            self._sync_base["unmatched"] += c.partial_sets
            # Evicted messages and those still waiting when the synchronizer is replaced never
            # became part of a set: both are drops.
            self._sync_base["dropped"] += c.dropped_by_eviction + sum(old.pending())
        self.sync = ApproximateTimeSynchronizer(n, self.config.sync.queue_size, self.config.sync.slop_s)
        self._evicted_seen = [0] * n

    def _make_publishers(self) -> None:
        q = output_qos()
        cfg = self.config
        self.pubs = {}
        if cfg.publish.occupancy:
            self.pubs["occupancy"] = self.create_publisher(PointCloud2, "~/output/occupancy", q)
        if cfg.publish.points:
            self.pubs["points"] = self.create_publisher(PointCloud2, "~/output/points", q)
        if cfg.publish.flow:
            self.pubs["flow"] = self.create_publisher(PointCloud2, "~/output/flow", q)
        if cfg.publish.moving:
            self.pubs["moving"] = self.create_publisher(PointCloud2, "~/output/moving", q)
        if cfg.publish.bev:
            self.pubs["bev"] = self.create_publisher(OccupancyGrid, "~/output/occupancy_bev", q)
        if cfg.publish.markers:
            self.pubs["markers"] = self.create_publisher(MarkerArray, "~/output/occupancy_markers", q)
        self.depth_pubs = {}
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

    def _subscribe(self, msg_type, topic: str, callback, qos, name: str, group):
        """A subscription whose lost messages (where the RMW reports them) and incompatible
        publishers are counted for input ``name``."""
        def lost(info, name=name):
            n = int(info.total_count_change)
            self.monitor.drop(name, "message_lost", n)
            self.health.report("message_lost", f"{name}: {n} message(s) lost in transport (DDS); see input_qos "
                                               "in mv4d_ros/README.md", n=n)

        def incompatible(event, name=name, topic=topic):
            policy = qos_policy_name_from_kind(event.last_policy_kind)
            detail = (f"a publisher on {self.resolve_topic_name(topic)} offers an incompatible {policy} policy and "
                      f"sends nothing here (a best-effort publisher needs a BEST_EFFORT/SENSOR_DATA input_qos)")
            self.monitor.incompatible_qos(name, detail)
            self.health.report("incompatible_qos", f"{name}: {detail}")

        try:
            events = SubscriptionEventCallbacks(message_lost=lost, incompatible_qos=incompatible)
            sub = self.create_subscription(msg_type, topic, callback, qos, callback_group=group,
                                           event_callbacks=events)
            self._lost_event_supported = True
        except UnsupportedEventTypeError:
            # The RMW cannot report lost messages: per-input rates against the fastest input tell instead.
            self._lost_event_supported = False
            sub = self.create_subscription(msg_type, topic, callback, qos, callback_group=group,
                                           event_callbacks=SubscriptionEventCallbacks(incompatible_qos=incompatible))
        self.subs.append(sub)
        return sub

    def _make_subscriptions(self) -> None:
        cfg = self.config
        q = qos_from_string(cfg.input_qos)
        image_type = CompressedImage if cfg.image_transport == "compressed" else Image
        self.subs = []
        for i, cam in enumerate(cfg.camera_names):
            self._subscribe(image_type, f"~/input/{cam}/image", lambda m, i=i: self._on_input(i, m), q, cam,
                            self.cb_inputs)
            if self.rig is None:
                self.subs.append(self.create_subscription(
                    CameraInfo, f"~/input/{cam}/camera_info", lambda m, c=cam: self._on_camera_info(c, m), q,
                    callback_group=self.cb_inputs))
        if cfg.use_lidar:
            self._subscribe(PointCloud2, "~/input/lidar", self._on_lidar, q, "lidar", self.cb_inputs)
        if cfg.use_odometry:
            self._subscribe(Odometry, "~/input/odometry", self._on_odometry,
                            qos_from_string(cfg.odometry_qos, "odometry_qos"), "odometry", self.cb_odometry)

    # ------------------------------------------------------------------ inputs (executor threads)
    def _input_name(self, index: int) -> str:
        names = self.sync_input_names()
        return names[index] if index < len(names) else f"input{index}"

    def _on_problem(self, cause: str, n: int, detail: str) -> None:
        """Every counted bad-input cause also enters the diagnostics window (per-input drops are
        recorded there by the caller with the input's name)."""
        monitor = getattr(self, "monitor", None)
        if monitor is not None and cause not in ("late", "message_lost", "incompatible_qos"):
            monitor.event(cause, n, detail)

    def _on_camera_info(self, cam: str, msg) -> None:
        self.camera_infos[cam] = msg

    def _on_odometry(self, msg) -> None:
        try:
            self.poses.add_odometry(msg)
        except MessageError as e:  # TransformError (non-finite pose) and bad stamps
            self.health.report("bad_odometry", f"odometry: {e}")
            return
        self._odometry_received += 1
        self.monitor.arrival("odometry", header_stamp_ns(msg))

    def _arrival(self, name: str, key: int | str, msg) -> tuple[int, str] | None:
        """``(stamp, order)`` of an input message against the newest on its input (``key`` in
        ``_last_stamp``), or None when it is dropped: bad header, or late (counted, logged)."""
        try:
            stamp = header_stamp_ns(msg)
        except MessageError as e:
            self.health.report("bad_header", f"{name}: {e}")
            return None
        self.monitor.arrival(name, stamp)
        last = self._last_stamp.get(key)
        order = classify_stamp(last, stamp, self.config.max_clock_jump_s)
        if order == LATE:
            self.monitor.drop(name, "late")
            self.health.report("late", f"{name}: stamp {(last - stamp) * 1e-9:.3f} s older than the newest on "
                                       "this input; message dropped")
            return None
        return stamp, order

    def _on_input(self, index: int, msg) -> None:
        if not self.active:
            return
        name = self._input_name(index)
        arrived = self._arrival(name, index, msg)
        if arrived is None:
            return
        stamp, order = arrived
        if order == CLOCK_JUMP_BACK:
            # A looping bag or a restarted clock: stale sets would pair old and new messages, and the
            # temporal state belongs to the old timeline (the worker resets it: new generation).
            back_s = (self._last_stamp[index] - stamp) * 1e-9
            self.health.report(CLOCK_JUMP_BACK,
                               f"{name}: stamp went back {back_s:.3f} s; sync and temporal state reset")
            self._new_sync()
            self._sync_resets += 1
            if self.worker is not None:
                self._sync_base["dropped"] += self.worker.discard()
            self._last_stamp.clear()
            self.lidar_buffer.clear()
            self._lidar_only_ref_ns = None
        self._last_stamp[index] = stamp
        msgs = self.sync.add(index, msg, stamp)
        evicted = self.sync.counters.evicted
        for i, (now, seen) in enumerate(zip(evicted, self._evicted_seen)):
            if now > seen:
                self.monitor.drop(self._input_name(i), "evicted", now - seen)
        self._evicted_seen = list(evicted)
        if msgs is not None:
            # How old the set's stamp is when its last message reaches the node (transport + executor).
            self._last_arrival_age_ms = (self.get_clock().now().nanoseconds - stamp) * 1e-6
            self.monitor.event("set_complete")
            self._lidar_only_ref_ns = stamp
            if self.worker is not None and self.worker.submit((msgs, time.perf_counter())):
                self.monitor.event("superseded")

    # ------------------------------------------------------------------ per set (worker thread)
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

    def _lidar_sweep(self, msg) -> dict | None:
        """The cloud in base_frame with its per-point fields and ``T_base_lidar`` (the sensor origin,
        None when the cloud comes in base_frame), or None (counted) when it cannot be used."""
        try:
            names = {f.name for f in msg.fields}
            cloud = read_xyz(msg, [f for f in LIDAR_FIELDS if f in names])
        except (PointCloudError, MessageError) as e:
            self.health.report("bad_lidar", f"lidar: {e}; set processed without LiDAR")
            return None
        if cloud.num_nonfinite:
            self.health.report("lidar_nonfinite_points", f"lidar: {cloud.num_nonfinite} of {cloud.num_total} points "
                                                         f"are NaN/inf (dropped)", n=1)
        frame = msg.header.frame_id
        if self.rig is not None and self.rig.lidar is not None and frame in (self.rig.lidar.frame_id, ""):
            T = self.rig.lidar.T_base_lidar
        elif frame in (self.config.base_frame, ""):
            T = None
        else:
            T = self.tf.lookup(self.config.base_frame, frame) if self.tf is not None else None
            if T is None:
                self.health.report("lidar_tf_missing", f"lidar: no transform {self.config.base_frame} <- {frame!r}")
                return None
        xyz = cloud.xyz if T is None else transform_points(T, cloud.xyz.astype(np.float64)).astype(np.float32)
        ring = cloud.fields.get("ring")
        return {"lidar_xyz": xyz, "lidar_intensity": cloud.fields.get("intensity"),
                "lidar_time_offset_s": cloud.fields.get("t"),
                "lidar_ring": None if ring is None else np.rint(ring).astype(np.int16), "T_base_lidar": T}

    def _on_lidar(self, msg) -> None:
        if not self.active:
            return
        arrived = self._arrival("lidar", "lidar", msg)
        if arrived is None:
            return
        stamp, order = arrived
        if order == CLOCK_JUMP_BACK:
            self.lidar_buffer.clear()       # the cameras' jump resets the sets and the temporal state
            self._lidar_only_ref_ns = None
        self._last_stamp["lidar"] = stamp
        self.lidar_buffer.add(stamp, msg)
        if self._lidar_only_due(stamp) and self.worker is not None \
                and self.worker.submit((LidarOnly(msg), time.perf_counter())):
            self.monitor.event("superseded")

    def _lidar_only_due(self, cloud_stamp_ns: int) -> bool:
        """Whether this cloud goes to a fusion model alone: no camera set stamped within
        ``lidar_only_after_s`` before it (sensor time, so a bag played at any rate behaves the same)."""
        after = self.config.lidar_only_after_s
        if not self.model_takes_lidar or after <= 0:
            return False
        if self._lidar_only_ref_ns is None:
            self._lidar_only_ref_ns = cloud_stamp_ns        # the cameras get lidar_only_after_s to start
        return cloud_stamp_ns - self._lidar_only_ref_ns > after * 1e9

    def _lidar_only_frame(self, msg) -> FrameRecord | None:
        """A camera-less frame of one cloud for the fusion model's LiDAR branch (None: the cloud is
        unusable, already counted)."""
        lidar = self._lidar_sweep(msg)
        if lidar is None:
            return None
        return FrameRecord(header_stamp_ns(msg), [], np.zeros((0, 1, 1, 3), np.uint8), np.zeros((0, 3, 3)),
                           np.zeros((0, 4, 4)), source="ros", **lidar)

    def _attached_cloud(self, set_stamp_ns: int):
        """The cloud that joins the set stamped ``set_stamp_ns`` (waiting at most ``sync.slop_s`` for one
        at or after it), or None (counted and logged when the model takes the LiDAR)."""
        slop = self.config.sync.slop_s
        newest = self.lidar_buffer.newest_ns
        # A cloud may still be on its way (clouds are bigger than images): wait for it, unless the LiDAR
        # has stopped (its newest cloud is more than a second older than the set).
        stopped = newest is not None and set_stamp_ns - newest > 1_000_000_000
        wait = slop if self.model_takes_lidar and not stopped else 0.0
        found = self.lidar_buffer.match(set_stamp_ns, slop, wait_s=wait)
        if found is None:
            self._lidar_unmatched += 1
            if self.model_takes_lidar:
                newest = self.lidar_buffer.newest_ns
                where = ("none received yet" if newest is None else
                         f"newest cloud {(newest - set_stamp_ns) * 1e-9:+.3f} s from it")
                self.health.report("lidar_unmatched", f"no ~/input/lidar cloud within sync.slop_s {slop} s of set "
                                                      f"{set_stamp_ns} ({where}); processed camera-only")
            return None
        return found[1]

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
        lidar: dict = {}
        lidar_msg = self._attached_cloud(stamp) if cfg.use_lidar else None
        if lidar_msg is not None:
            stamp = header_stamp_ns(lidar_msg)
            lidar = self._lidar_sweep(lidar_msg) or {}
        frame = FrameRecord(stamp, list(cfg.camera_names), np.stack(images), np.stack(Ks), np.stack(Ts),
                            camera_stamps_ns=stamps, source="ros", **lidar)
        return frame, meta

    def ego_pose(self, frame: FrameRecord) -> bool:
        """Set ``frame.T_world_base`` from the odometry buffer, waiting at most ``odometry_wait_s`` for
        a sample at or after the set's stamp; False (counted, logged) when there is no pose: the set
        is then processed without temporal fusion."""
        cfg = self.config
        if not cfg.use_odometry:
            return False
        newest = self.poses.newest_ns
        if newest is None or newest < frame.stamp_ns:
            self.poses.wait_for(frame.stamp_ns, cfg.odometry_wait_s)
        found = self.poses.lookup(frame.stamp_ns)
        if found is None:
            newest = self.poses.newest_ns
            where = ("none received yet" if newest is None else
                     f"newest odometry stamp {newest} ns is {(frame.stamp_ns - newest) * 1e-9:+.3f} s away")
            self.health.report("odometry_missing",
                               f"no ~/input/odometry pose within {cfg.odometry_tolerance_s} s of set "
                               f"{frame.stamp_ns} after waiting {cfg.odometry_wait_s} s ({where}); processed "
                               "without temporal fusion")
            return False
        frame.T_world_base = found.T_world_base
        return True

    def _on_worker_error(self, e: BaseException) -> None:
        self.health.report("engine_error", f"{type(e).__name__}: {e}")

    def _process_set(self, item, generation: int) -> None:
        msgs, t_complete = item
        t0 = time.perf_counter()
        self._last_wait_ms = (t0 - t_complete) * 1e3
        if generation != self._generation_seen:
            # Sets of the old timeline are gone; so is the temporal state built from them.
            self._generation_seen = generation
            self.pipeline.reset(CLOCK_JUMP_BACK)
        want = self._wanted_outputs()
        if not want:
            self._skipped_idle += 1
            self.monitor.event("skipped_no_subscriber")
            return
        try:
            if isinstance(msgs, LidarOnly):
                frame, meta = self._lidar_only_frame(msgs.msg), []
                if frame is None:
                    return
            else:
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
        self.monitor.event("processed")
        if not frame.camera_names:
            self.monitor.event("lidar_only")
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
            self.pubs["markers"].publish(self._marker_array(arrays.markers, out.grid.voxel_size, frame.stamp_ns,
                                                            arrays.arrows))

    def _marker_array(self, cubes, voxel_size, stamp_ns: int, arrows=None) -> MarkerArray:
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
        # Velocity arrows of the moving voxels (ns "velocity", one ARROW each: start -> where it is in
        # flow.arrow_horizon_s), orange like a warning.
        shaft = float(min(voxel_size[:2])) * 0.25
        for i, (start, end) in enumerate(arrows if arrows is not None else ()):
            m = Marker(header=header, ns="velocity", id=i, type=Marker.ARROW, action=Marker.ADD,
                       scale=Vector3(x=shaft, y=2 * shaft, z=2 * shaft), color=ColorRGBA(r=1.0, g=0.5, b=0.0, a=1.0))
            m.pose.orientation.w = 1.0
            m.points = [Point(x=float(start[0]), y=float(start[1]), z=float(start[2])),
                        Point(x=float(end[0]), y=float(end[1]), z=float(end[2]))]
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
            "superseded": self._superseded_base + (self.worker.superseded if self.worker is not None else 0),
            "sets_skipped_no_subscriber": self._skipped_idle,
            "frames_temporal_fused": self.pipeline.stats.temporal_frames if self.pipeline is not None else 0,
        }
        if self.config.use_odometry:
            out["odometry_received"] = self._odometry_received
        if self.config.use_lidar:
            out["lidar_unmatched_sets"] = self._lidar_unmatched
        if self.model_takes_lidar and self.pipeline is not None:
            out["lidar_frames"] = self.pipeline.stats.lidar_frames
            out["lidar_missing"] = self.pipeline.stats.lidar_missing
            out["lidar_only_frames"] = self.pipeline.stats.lidar_only_frames
        out.update({f"drop_{k}": v for k, v in self.health.counts.items()})
        return out

    def diagnostic_statuses(self) -> list[DiagnosticStatus]:
        """The node's status (rule: :func:`mv4d_ros.input_monitor.assess`, cumulative counters as values)
        followed by one status per input."""
        w = self.monitor.window()
        level, message = assess(w, self.sync_input_names(), self._notes)
        counts = self.counters()
        pending = dict(zip(self.sync_input_names(), self.sync.pending()))
        if self.config.use_lidar:
            pending["lidar"] = len(self.lidar_buffer)
        values = {**counts, **{f"pending_{k}": v for k, v in pending.items()},
                  "window_s": w.window_s,
                  **{f"window_{k}": v for k, v in sorted(w.events.items())},
                  "last_processing_ms": round(self._last_processing_ms, 3),
                  "last_latency_ms": round(self._last_latency_ms, 3),
                  "last_wait_ms": round(self._last_wait_ms, 3),
                  "last_set_arrival_age_ms": round(self._last_arrival_age_ms, 3),
                  "message_lost_reported": {True: "yes", False: "no (rates only)",
                                            None: "?"}[self._lost_event_supported]}
        name = self.get_name()
        statuses = [DiagnosticStatus(level=bytes([level]), name=f"{name}: perception", message=message,
                                     hardware_id="mv4d",
                                     values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])]
        fastest = max((i.rate_hz for i in w.inputs if i.name != "odometry"), default=0.0)
        for i in w.inputs:
            v = {"topic": self.resolve_topic_name(i.topic), "rate_hz": round(i.rate_hz, 2),
                 "age_s": "never" if i.age_s is None else round(i.age_s, 3),
                 "stamp_age_s": ("never" if i.last_stamp_ns is None else
                                 round((self.get_clock().now().nanoseconds - i.last_stamp_ns) * 1e-9, 3)),
                 "received": i.received, "drops_window": sum(i.drops.values()),
                 **{f"drops_window_{k}": n for k, n in sorted(i.drops.items())},
                 **{f"drops_total_{k}": n for k, n in sorted(i.drop_totals.items())}}
            if i.name != "odometry":
                # Without a lost-message event this is how a lossy input shows: fewer arrivals than the fastest.
                v["behind_fastest"] = int(round(max(0.0, fastest - i.rate_hz) * min(w.window_s, w.elapsed_s)))
            statuses.append(DiagnosticStatus(level=bytes([i.level]), name=f"{name}: input {i.name}",
                                             message=i.message, hardware_id=v["topic"],
                                             values=[KeyValue(key=k, value=str(x)) for k, x in v.items()]))
        return statuses

    def publish_diagnostics(self) -> None:
        if self.pub_diag is None:
            return
        arr = DiagnosticArray(status=self.diagnostic_statuses())
        arr.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(arr)


class PerceptionNode(_PerceptionCore, Node):
    """The plain node: parameters checked, engine loaded and processing started in the constructor
    (a bad configuration raises :class:`ConfigError` naming the parameter). ``engine`` may be
    injected (embedding, tests, benchmarks)."""

    def __init__(self, *, engine: Engine | None = None, node_name: str = NODE_NAME, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self._declare(engine)
        self._configure()
        self._activate()

    def destroy_node(self) -> None:
        self._stop()
        super().destroy_node()


@functools.lru_cache(maxsize=1)
def _lifecycle_node_class():
    from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

    class LifecyclePerceptionNode(_PerceptionCore, LifecycleNode):
        """The managed node (``perception_node --lifecycle``): parameters are declared (typed, strict)
        at construction and can be changed while unconfigured; **configure** reads and validates them,
        loads the engine (a TensorRT engine is built and cached here) and the rig; **activate** creates
        publishers and subscriptions and starts processing; **deactivate** stops it (subscriptions and
        publishers go, temporal state is kept); **cleanup** frees the engine; **shutdown** both."""

        def __init__(self, *, engine: Engine | None = None, node_name: str = NODE_NAME, **kwargs) -> None:
            super().__init__(node_name, **kwargs)
            self._declare(engine, read_only=False)
            self.add_on_set_parameters_callback(self._on_set_parameters)

        def _on_set_parameters(self, params):
            from rcl_interfaces.msg import SetParametersResult

            from mv4d_core.pipeline.config import PARAMETERS, check_parameter

            known = {p.name for p in PARAMETERS}
            for p in params:
                if p.name not in known:
                    continue
                if self.pipeline is not None:
                    return SetParametersResult(successful=False, reason=f"{p.name}: parameters can change only "
                                                                        "while unconfigured (cleanup first)")
                try:
                    check_parameter(p.name, p.value)
                except ConfigError as e:
                    return SetParametersResult(successful=False, reason=str(e))
            return SetParametersResult(successful=True)

        def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
            try:
                self._configure()
            except Exception as e:  # noqa: BLE001 - any failure leaves it unconfigured, to fix and retry
                text = str(e) if isinstance(e, (ConfigError, EngineError)) else f"{type(e).__name__}: {e}"
                self.get_logger().error(f"configure failed: {text}")
                self._cleanup()
                return TransitionCallbackReturn.FAILURE
            self.get_logger().info(f"configured: engine {self.pipeline.engine.spec.name} loaded and checked")
            return TransitionCallbackReturn.SUCCESS

        def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
            self._activate()
            return TransitionCallbackReturn.SUCCESS

        def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
            self._deactivate()
            self.get_logger().info("deactivated: subscriptions and publishers destroyed, processing stopped")
            return TransitionCallbackReturn.SUCCESS

        def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
            self._cleanup()
            self.get_logger().info("cleaned up: engine freed")
            return TransitionCallbackReturn.SUCCESS

        def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
            self._stop()
            return TransitionCallbackReturn.SUCCESS

        def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
            self._stop()
            return TransitionCallbackReturn.SUCCESS

        def destroy_node(self) -> None:
            self._stop()
            super().destroy_node()

    return LifecyclePerceptionNode


def __getattr__(name: str):
    # rclpy.lifecycle is imported only when the lifecycle flavour is used.
    if name == "LifecyclePerceptionNode":
        return _lifecycle_node_class()
    raise AttributeError(name)


# ---------------------------------------------------------------------- entry point
def _fatal(problem: str) -> int:
    """The one line every startup error ends in (exit status 2)."""
    print(f"[FATAL] [{NODE_NAME}]: refusing to start: {problem}", file=sys.stderr, flush=True)
    return 2


def _has_ros_parameters(data) -> bool:
    """A ``ros__parameters`` mapping under some node name (nested namespaces allowed, as rcl reads them)."""
    if not isinstance(data, dict):
        return False
    return any(k == "ros__parameters" or (isinstance(v, dict) and _has_ros_parameters(v))
               for k, v in data.items() if k != "ros__parameters" or isinstance(v, dict))


def check_ros_arguments(args: list[str]) -> str | None:
    """A problem with ``--params-file`` files that rcl would only report as ``failed to initialize
    rcl`` (a traceback), or None."""
    import yaml

    ros = False
    files = []
    for i, a in enumerate(args):
        if a == "--ros-args":
            ros = True
        elif a == "--" and ros:
            ros = False
        elif ros and a == "--params-file":
            files.append(args[i + 1] if i + 1 < len(args) else "")
        elif ros and a in ("-p", "--param", "-r", "--remap"):
            rule = args[i + 1] if i + 1 < len(args) else ""
            if ":=" not in rule or rule.startswith(":=") or (a in ("-p", "--param") and rule.endswith(":=")):
                what = "name:=value" if a in ("-p", "--param") else "from:=to"
                return f"'{a} {rule}' is not {what} (--ros-args)"
    for f in files:
        if not f:
            return "--params-file needs a file name"
        if not os.path.isfile(f):
            return f"parameter file {f!r} does not exist (--params-file)"
        try:
            with open(f, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except (OSError, UnicodeDecodeError) as e:
            return f"parameter file {f!r} cannot be read: {e}"
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            at = f" at line {where.line + 1}" if where is not None else ""
            return f"parameter file {f!r} is not valid YAML{at}: {getattr(e, 'problem', e)}"
        if not _has_ros_parameters(data):
            return (f"parameter file {f!r} has no '<node name or /**>: ros__parameters:' section "
                    "(see config/mv4d.param.yaml)")
    return None


def main(args: list[str] | None = None) -> int:
    """``perception_node [--lifecycle] [--ros-args ...]``. Every startup error is one
    ``[FATAL] ... refusing to start: ...`` line and exit status 2."""
    argv = list(sys.argv if args is None else args)
    lifecycle = "--lifecycle" in argv
    argv = [a for a in argv if a != "--lifecycle"]
    problem = check_ros_arguments(argv)
    if problem:
        return _fatal(problem)
    try:
        rclpy.init(args=argv)
    except Exception as e:  # noqa: BLE001 - RCLError for bad --ros-args: one line, not a traceback
        text = " ".join(str(e).split()).split(" Error: ")[0].split(", at /")[0]
        return _fatal(f"{text} (check the --ros-args)")
    try:
        node = (_lifecycle_node_class() if lifecycle else PerceptionNode)()
    except ConfigError as e:
        rclpy.try_shutdown()
        return _fatal(str(e))
    except Exception as e:  # noqa: BLE001 - every startup error is one line
        rclpy.try_shutdown()
        return _fatal(f"{type(e).__name__}: {e}")
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        executor.shutdown(timeout_sec=5.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
