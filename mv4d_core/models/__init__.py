"""mv4d network: config, inputs, model and outputs."""

from mv4d_core.models.config import BackboneConfig, DepthConfig, MaskingConfig, ModelConfig
from mv4d_core.models.inputs import ModelInputs, resize_cameras
from mv4d_core.models.model import MV4DModel, build_model, count_parameters
from mv4d_core.models.outputs import INFERENCE_OUTPUTS, ModelOutputs

__all__ = ["BackboneConfig", "DepthConfig", "MaskingConfig", "ModelConfig", "ModelInputs", "resize_cameras",
           "MV4DModel", "build_model", "count_parameters", "INFERENCE_OUTPUTS", "ModelOutputs"]
