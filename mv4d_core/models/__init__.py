"""mv4d network: config, inputs, model and published outputs."""

from mv4d_core.models.config import BackboneConfig, DepthConfig, MaskingConfig, ModelConfig
from mv4d_core.models.inputs import ModelInputs, inputs_from_frames
from mv4d_core.models.model import MV4DModel, build_model, count_parameters
from mv4d_core.models.outputs import ModelOutputs, PerceptionOutputs

__all__ = ["BackboneConfig", "DepthConfig", "MaskingConfig", "ModelConfig", "ModelInputs", "inputs_from_frames",
           "MV4DModel", "build_model", "count_parameters", "ModelOutputs", "PerceptionOutputs"]
