"""Training: a model-agnostic trainer (resume, DDP, AMP, EMA) and the mv4d self-supervised recipe."""

from mv4d_core.training.trainer import ResumableSampler, StepResult, Trainer, TrainerConfig

__all__ = ["ResumableSampler", "StepResult", "Trainer", "TrainerConfig"]
