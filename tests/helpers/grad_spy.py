"""Capture the gradients a trainer clips and steps with, without a hook in the library:
the trainer modules call ``clip_grad_norm_`` by that module-level name, so a test swaps it
for a spy that records the (unclipped) gradients first."""
from __future__ import annotations

import contextlib
from unittest import mock

import torch


@contextlib.contextmanager
def spy_gradients(module, flat: bool = False):
    """Yields a list that receives, at every optimizer step of ``module``'s trainer, the list
    of the trained parameters' gradients (zeros where None), or one flat tensor with ``flat``."""
    grads: list = []
    orig = module.clip_grad_norm_

    def spy(params, *args, **kwargs):
        params = list(params)
        g = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]
        grads.append(torch.cat([t.flatten() for t in g]) if flat else g)
        return orig(params, *args, **kwargs)

    with mock.patch.object(module, "clip_grad_norm_", spy):
        yield grads
