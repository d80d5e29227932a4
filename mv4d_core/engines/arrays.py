"""The one conversion between :class:`EngineInputs` / :class:`EngineOutputs` and the model's named
tensors, shared by every engine: the torch engine feeds the same names to ``MV4DModel`` that the
exported graph takes as inputs, and reads back the same :data:`~mv4d_core.models.outputs.INFERENCE_OUTPUTS`.

Graph inputs (batch first, B = 1 here): ``images`` (B, N, 3, h, w), ``intrinsics`` (B, N, 3, 3),
``T_base_cam`` (B, N, 4, 4), for temporal models ``prev_volume`` (B, C, X, Y, Z), ``T_prev_cur``
(B, 4, 4), ``prev_valid`` (B,): zeros, identity and 0 when there is no usable previous frame; for
fusion models ``lidar_volume`` (B, C_l, X, Y, Z), ``lidar_depth`` (B, N, 3, h, w), ``lidar_valid`` (B,):
zeros and 0 when the sample has no usable sweep.
"""

from __future__ import annotations

import numpy as np

from mv4d_core.engines.base import EngineInputs, EngineOutputs
from mv4d_core.models.outputs import INFERENCE_OUTPUTS

BASE_INPUTS: tuple[str, ...] = ("images", "intrinsics", "T_base_cam")
TEMPORAL_INPUTS: tuple[str, ...] = ("prev_volume", "T_prev_cur", "prev_valid")
LIDAR_INPUTS: tuple[str, ...] = ("lidar_volume", "lidar_depth", "lidar_valid")


def input_names(temporal: bool, lidar: bool = False) -> tuple[str, ...]:
    return BASE_INPUTS + (TEMPORAL_INPUTS if temporal else ()) + (LIDAR_INPUTS if lidar else ())


def output_names() -> tuple[str, ...]:
    return INFERENCE_OUTPUTS


def model_feeds(inputs: EngineInputs, state, model_config) -> tuple[dict[str, object], bool]:
    """Batch-of-1 named inputs for one sample -> ``(feeds, uses_previous)``.

    ``state`` is the previous call's ``state_volume`` (any array type, batch first) or None; it is
    fed only together with ``inputs.T_prev_cur``."""
    def f32(a):
        return np.ascontiguousarray(a, dtype=np.float32)[None]

    feeds: dict[str, object] = {"images": f32(inputs.images), "intrinsics": f32(inputs.intrinsics),
                                "T_base_cam": f32(inputs.T_base_cam)}
    use_prev = False
    if model_config.temporal:
        use_prev = inputs.T_prev_cur is not None and state is not None
        if use_prev:
            feeds["prev_volume"] = state
            feeds["T_prev_cur"] = f32(inputs.T_prev_cur)
        else:
            feeds["prev_volume"] = np.zeros((1, model_config.volume_channels) + tuple(model_config.grid.shape),
                                            np.float32)
            feeds["T_prev_cur"] = np.eye(4, dtype=np.float32)[None]
        feeds["prev_valid"] = np.array([1.0 if use_prev else 0.0], np.float32)
    if model_config.lidar.enabled:
        from mv4d_core.models.lidar_inputs import volume_channels

        has = inputs.lidar_volume is not None and inputs.lidar_depth is not None
        if has:
            feeds["lidar_volume"] = f32(inputs.lidar_volume)
            feeds["lidar_depth"] = f32(inputs.lidar_depth)
        else:
            n, _, h, w = inputs.images.shape
            feeds["lidar_volume"] = np.zeros((1, volume_channels(model_config.lidar.previous_sweeps))
                                             + tuple(model_config.grid.shape), np.float32)
            feeds["lidar_depth"] = np.zeros((1, n, 3, h, w), np.float32)
        feeds["lidar_valid"] = np.array([1.0 if has else 0.0], np.float32)
    return feeds, use_prev


def engine_outputs(named: dict[str, np.ndarray], fused_previous: bool) -> EngineOutputs:
    """Batch-of-1 named outputs (numpy) -> :class:`EngineOutputs`."""
    missing = [n for n in INFERENCE_OUTPUTS if n not in named]
    if missing:
        from mv4d_core.engines.base import EngineError

        raise EngineError(f"engine outputs lack {missing}")
    flow = np.moveaxis(np.asarray(named["flow_mps"][0], np.float32), 0, -1)     # (3, X, Y, Z) -> (X, Y, Z, 3)
    return EngineOutputs(occupancy_prob=np.asarray(named["occupancy_prob"][0], np.float32),
                         flow_mps=np.ascontiguousarray(flow), depth_m=np.asarray(named["depth_m"][0], np.float32),
                         fused_previous=bool(fused_previous),
                         motion_prob=np.asarray(named["motion_prob"][0], np.float32))
