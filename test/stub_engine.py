"""A stub :class:`~mv4d_core.engines.Engine` for node tests: the tiny model's shapes, a fixed
processing time, no network (so scheduling, diagnostics and lifecycle tests do not depend on the
speed of torch on a loaded machine). Imported by the scripts the DDS tests run in a namespace."""

from __future__ import annotations

import time

import numpy as np

from mv4d_core.engines import Engine, EngineOutputs, EngineSpec
from mv4d_core.models import ModelConfig


class SlowStubEngine(Engine):
    """``infer`` sleeps ``delay_s`` and returns an empty volume (occupancy 0), zero flow, 10 m depth.
    ``fail_next`` makes the next ``n`` calls raise (an engine failure)."""

    def __init__(self, delay_s: float = 0.3, lidar: bool = False) -> None:
        cfg = ModelConfig.tiny()
        if lidar:
            import dataclasses

            cfg = dataclasses.replace(cfg, lidar=dataclasses.replace(cfg.lidar, enabled=True))
        self.spec = EngineSpec.from_model_config(cfg, "stub")
        self.delay_s = delay_s
        self.calls = 0
        self.fail_next = 0
        self.inputs = []          # (has T_prev_cur, has lidar_volume) per call

    def infer(self, inputs):
        self.calls += 1
        self.inputs.append((inputs.T_prev_cur is not None, inputs.lidar_volume is not None))
        time.sleep(self.delay_s)
        if self.fail_next > 0:
            self.fail_next -= 1
            raise RuntimeError("stub engine failure")
        n = inputs.images.shape[0]
        h, w = self.spec.image_hw
        s = self.spec.depth_stride
        shape = self.spec.grid.shape
        return EngineOutputs(np.zeros(shape, np.float32), np.zeros((*shape, 3), np.float32),
                             np.full((n, h // s, w // s), 10.0, np.float32), inputs.T_prev_cur is not None)
