"""What every model shares: a leading seed axis on every parameter, named hook points, and the
held-out evaluation.

An ensemble of E seeds is one module whose parameters have shape (E, ...): summing the
per-seed losses gives each seed exactly its own gradient, and Adam/SGD act elementwise, so
training the ensemble equals training each seed alone (a test checks it).

Hook points (TransformerLens's idea): a `HookPoint` is an identity module placed where an
activation is worth reading; its name is its dotted path in the module tree
(`blocks.0.attn.hook_pattern`). `run_with_cache` reads every hook (or those a filter picks),
`hooks([(name, fn)])` / `add_hook(name, fn)` run a function at a hook, and a function that
returns a tensor replaces the activation (patching). With no function attached a hook returns
its input at the cost of one attribute test, so training pays nothing for it. Hook points
hold no parameters, so they leave the parameter names (checkpoints, stage prefixes) alone.
Every model names its hooks in its module doc.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Sequence, Union

import torch
from torch import nn

from icldyn.errors import UsageError
from icldyn.seeding import generator

EVAL_CHUNK = 8192

HookFn = Callable[[torch.Tensor, "HookPoint"], Union[torch.Tensor, None]]
NameFilter = Union[str, Callable[[str], bool], None]


class HookPoint(nn.Module):
    """Identity at a named activation; runs the functions attached to it, in order.

    A function is called as fn(activation, hook) and may return a replacement tensor (of the
    same shape) or None to leave the activation as it is. `name` is set from the module tree
    (`EnsembleModel.setup_hooks`)."""

    def __init__(self):
        super().__init__()
        self.name: str | None = None
        self.fns: list[HookFn] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # bypasses nn.Module.__call__: an idle hook is one list test
        if not self.fns:
            return x
        for fn in self.fns:
            out = fn(x, self)
            if out is not None:
                x = out
        return x

    forward = __call__

    @property
    def active(self) -> bool:
        return bool(self.fns)

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


class HookGroup(nn.Module):
    """A parameter-free container that places hook points (or other groups) in the module tree,
    for models whose layers are not modules of their own (`HookGroup(attn=HookGroup(hook_pattern=HookPoint()))`)."""

    def __init__(self, **children: nn.Module):
        super().__init__()
        for name, child in children.items():
            self.add_module(name, child)


def attention_hooks(*names: str) -> HookGroup:
    """`attn` hooks of one layer: HookGroup(attn=HookGroup(hook_<name>=HookPoint(), ...))."""
    return HookGroup(attn=HookGroup(**{name: HookPoint() for name in names}))


def _matcher(names: NameFilter) -> Callable[[str], bool]:
    if names is None:
        return lambda name: True
    if isinstance(names, str):
        return lambda name: name == names
    if callable(names):
        return names
    chosen = set(names)
    return lambda name: name in chosen


class EnsembleModel(nn.Module):
    """Base class. Subclasses set `prefix_outputs` and implement `forward(batch) -> (E, B, P)`.

    Every subclass is built as `Model(config, task, seeds, dtype)` (`icldyn.models.build_model`):
    what it needs of the task (d, vocabulary, points per prompt, a basis) it reads from `task`
    (a task, or for models that need only the task's config, the task config itself).

    `prefix_outputs`: True when the model predicts y at every position (P = T, teacher forcing),
    False when it predicts only the query (P = 1).
    """

    prefix_outputs: bool = False

    def __init__(self, n_seeds: int):
        super().__init__()
        self.n_seeds = n_seeds
        self._n_hook_fns = 0

    # -- hook points -------------------------------------------------------------------------------
    def setup_hooks(self) -> dict[str, HookPoint]:
        """Name every HookPoint by its dotted module path; returns {name: hook point}."""
        points = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                points[name] = module
        return points

    def hook_points(self) -> dict[str, HookPoint]:
        """{name: HookPoint} of this model (names set from the module tree)."""
        return self.setup_hooks()

    @property
    def hooks_active(self) -> bool:
        """Is a function attached to any hook? (Models may skip work no hook can see when not.)"""
        return self._n_hook_fns > 0

    def add_hook(self, names: NameFilter, fn: HookFn) -> list[HookPoint]:
        """Attach `fn` to the hooks named (a name, a list of names, or a predicate on names);
        it stays until `reset_hooks()`. Raises UsageError when nothing matches."""
        match = _matcher(names)
        points = [hp for name, hp in self.hook_points().items() if match(name)]
        if not points:
            raise UsageError(f"no hook point of {type(self).__name__} matches {names!r}; "
                             f"allowed: {', '.join(self.hook_points())}")
        for hp in points:
            hp.fns.append(fn)
        self._n_hook_fns += len(points)
        return points

    def reset_hooks(self) -> None:
        for hp in self.hook_points().values():
            hp.fns.clear()
        self._n_hook_fns = 0

    @contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[NameFilter, HookFn]] = ()):
        """Attach (name filter, fn) pairs for the duration of the block, then detach them."""
        added: list[tuple[HookPoint, HookFn]] = []
        try:
            for names, fn in fwd_hooks:
                added += [(hp, fn) for hp in self.add_hook(names, fn)]
            yield self
        finally:
            for hp, fn in added:
                hp.fns.remove(fn)
            self._n_hook_fns -= len(added)

    def run_with_hooks(self, batch, fwd_hooks: Iterable[tuple[NameFilter, HookFn]]) -> torch.Tensor:
        with self.hooks(fwd_hooks):
            return self(batch)

    def run_with_cache(self, batch, names: NameFilter = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(output, {hook name: activation, detached}) for the hooks `names` picks (all by default)."""
        cache: dict[str, torch.Tensor] = {}

        def store(x, hook):
            cache[hook.name] = x.detach()

        with self.hooks([(names if names is not None else (lambda name: True), store)]):
            out = self(batch)
        return out, cache

    # -- losses ------------------------------------------------------------------------------------
    def loss(self, pred: torch.Tensor, batch) -> torch.Tensor:
        """Per-seed training loss (E,): ½·mean squared error over the predicted positions.

        Token models (cross-entropy, or a paper's own loss switch) override this.
        """
        target = batch.y if self.prefix_outputs else batch.y[..., -1:]
        return 0.5 * (pred - target).pow(2).flatten(1).mean(1)

    def population_loss(self, task) -> torch.Tensor:
        """Per-seed exact expected training loss (E,), where the model and task offer one."""
        raise NotImplementedError(f"{type(self).__name__} has no exact population loss")

    def evaluate(self, batch, chunk: int = EVAL_CHUNK) -> torch.Tensor:
        return evaluate(self, batch, chunk)


@torch.no_grad()
def evaluate(model, batch, chunk: int = EVAL_CHUNK) -> torch.Tensor:
    """Per-seed training-convention loss (E,) on held-out prompts, in chunks of prompts."""
    total, n = 0.0, batch.x.shape[1]
    for start in range(0, n, chunk):
        part = batch.select(slice(start, start + chunk))
        size = part.x.shape[1]
        total = total + model.loss(model(part), part).double() * size
    return total / n


def task_config(task):
    """The task's config: `task.config` for a task, the argument itself for a task config."""
    return getattr(task, "config", task)


def seeded_normal(seeds: Sequence[int], shape: Sequence[int], std: float, salt: int,
                  dtype=torch.float32) -> torch.Tensor:
    """(E, *shape) normal init, each seed's slice from its own init stream (salted per tensor)."""
    return torch.stack([
        torch.randn(*shape, generator=generator(s, "init", salt), dtype=dtype) * std for s in seeds
    ])
