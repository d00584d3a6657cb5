"""Optimizers by name. All act elementwise, so seeds stacked on a leading axis stay independent.

`train.fused_optimizer` picks torch's fused kernel (one pass over every parameter) instead of
its CPU default, the for-loop of ~10 small ops per tensor: the same update up to rounding."""

from __future__ import annotations

import torch

from icldyn.registry import Registry


def _impl(c) -> dict:
    return {"fused": True} if getattr(c, "fused_optimizer", False) else {}


OPTIMIZERS: Registry = Registry("optimizer")
OPTIMIZERS.register("gd", lambda p, c: torch.optim.SGD(p, lr=c.lr, weight_decay=c.weight_decay, **_impl(c)))
OPTIMIZERS.register("sgd", lambda p, c: torch.optim.SGD(p, lr=c.lr, momentum=c.momentum,
                                                        weight_decay=c.weight_decay, **_impl(c)))
OPTIMIZERS.register("adam", lambda p, c: torch.optim.Adam(p, lr=c.lr, betas=c.betas,
                                                          weight_decay=c.weight_decay, **_impl(c)))
OPTIMIZERS.register("adamw", lambda p, c: torch.optim.AdamW(p, lr=c.lr, betas=c.betas,
                                                            weight_decay=c.weight_decay, **_impl(c)))


def build_optimizer(params, train_config) -> torch.optim.Optimizer:
    return OPTIMIZERS[train_config.optimizer](list(params), train_config)
