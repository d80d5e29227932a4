"""Commands may set torch's intra-op thread count for their run; called in-process (the demo, tests,
notebooks) they must not leave it changed for the caller."""

from __future__ import annotations

import functools


def restores_torch_threads(fn):
    """Decorator: ``torch.get_num_threads()`` after the call equals the value before it."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        import torch

        before = torch.get_num_threads()
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)
    return wrapped
