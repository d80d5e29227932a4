"""Loss plumbing: a weighted loss module that declares what it reads, and a composite :class:`LossSet`.

Each loss is a small ``nn.Module`` whose ``forward(**inputs)`` returns the *unweighted* scalar.
``reads`` maps the forward's argument names to keys of the batch dictionary the trainer
assembles (model outputs + data), so a config can switch loss families on and off without
touching the trainer. :class:`LossSet` gathers the inputs, applies ``weight`` and
``enable_after`` and returns a dict of scalar terms for logging plus their sum under ``"total"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


class WeightedLoss(nn.Module):
    """Base of every mv4d loss.

    Args:
        weight: multiplier applied by :class:`LossSet` (the module's forward stays unweighted).
        enable_after: the loss contributes only from this training step on (EgoMono4D style).
        reads: ``{forward_argument: batch_key}`` overrides of :attr:`default_reads`.
    """

    #: ``{forward_argument: batch_key}``; subclasses declare their defaults.
    default_reads: Mapping[str, str] = {}
    #: forward arguments that may be absent from the batch (passed as ``None`` then).
    optional_reads: frozenset[str] = frozenset()

    def __init__(self, weight: float = 1.0, enable_after: int = 0, reads: Mapping[str, str] | None = None):
        super().__init__()
        if weight < 0:
            raise ValueError(f"{type(self).__name__}: weight must be >= 0, got {weight}")
        self.weight = float(weight)
        self.enable_after = int(enable_after)
        self.reads = dict(self.default_reads)
        if reads:
            unknown = set(reads) - set(self.reads)
            if unknown:
                raise ValueError(f"{type(self).__name__}: unknown input(s) {sorted(unknown)}; "
                                 f"it reads {sorted(self.reads)}")
            self.reads.update(reads)

    def is_enabled(self, step: int | None) -> bool:
        return self.weight > 0 and (step is None or step >= self.enable_after)

    def gather(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Pick this loss' forward arguments out of ``batch``; a missing key is a clear error."""
        kwargs = {}
        for arg, key in self.reads.items():
            if key in batch and batch[key] is not None:
                kwargs[arg] = batch[key]
            elif arg in self.optional_reads:
                kwargs[arg] = None
            else:
                raise KeyError(f"{type(self).__name__} needs batch[{key!r}] (forward argument {arg!r}); "
                               f"batch has {sorted(batch)}")
        return kwargs

    def extra_repr(self) -> str:
        return f"weight={self.weight}, enable_after={self.enable_after}, reads={self.reads}"


class LossSet(nn.Module):
    """Sum of enabled, weighted losses.

    ``forward(batch, step=None) -> dict``: ``{name: weighted scalar}`` for each enabled loss,
    ``{name + "/raw": unweighted scalar (detached)}`` for logging, and ``"total"``: their sum
    (a zero tensor with ``requires_grad=False`` when nothing is enabled). With ``check_finite`` a
    NaN/inf term raises ``FloatingPointError`` naming the loss.
    """

    def __init__(self, losses: Mapping[str, WeightedLoss], check_finite: bool = True):
        super().__init__()
        self.check_finite = check_finite
        for name in losses:
            if "/" in name or name == "total":
                raise ValueError(f"loss name {name!r} may not contain '/' or be 'total'")
        self.losses = nn.ModuleDict(dict(losses))

    def forward(self, batch: Mapping[str, Any], step: int | None = None) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        total = None
        for name, loss in self.losses.items():
            if not loss.is_enabled(step):
                continue
            raw = loss(**loss.gather(batch))
            if raw.dim() != 0:
                raise RuntimeError(f"loss {name!r} returned shape {tuple(raw.shape)}, expected a scalar")
            if self.check_finite and not torch.isfinite(raw):  # one host sync per loss; off for speed
                raise FloatingPointError(f"loss {name!r} is not finite ({raw.item()})")
            weighted = loss.weight * raw
            out[name] = weighted
            out[name + "/raw"] = raw.detach()
            total = weighted if total is None else total + weighted
        out["total"] = total if total is not None else torch.zeros(())
        return out

    def enabled_names(self, step: int | None = None) -> list[str]:
        return [n for n, l in self.losses.items() if l.is_enabled(step)]
