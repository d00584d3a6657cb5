"""Optimizers by name. All act elementwise, so seeds stacked on a leading axis stay independent."""

from __future__ import annotations

import torch

from icldyn.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")
OPTIMIZERS.register("gd", lambda p, c: torch.optim.SGD(p, lr=c.lr, weight_decay=c.weight_decay))
OPTIMIZERS.register("sgd", lambda p, c: torch.optim.SGD(p, lr=c.lr, momentum=c.momentum,
                                                        weight_decay=c.weight_decay))
OPTIMIZERS.register("adam", lambda p, c: torch.optim.Adam(p, lr=c.lr, betas=c.betas,
                                                          weight_decay=c.weight_decay))
OPTIMIZERS.register("adamw", lambda p, c: torch.optim.AdamW(p, lr=c.lr, betas=c.betas,
                                                            weight_decay=c.weight_decay))


def build_optimizer(params, train_config) -> torch.optim.Optimizer:
    return OPTIMIZERS[train_config.optimizer](list(params), train_config)
