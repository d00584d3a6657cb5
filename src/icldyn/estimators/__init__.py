"""Estimator registry: name → factory (task) -> Estimator.  Every estimator predicts every prefix at once.

    zero               0
    averaging          h_tᵀ x_t, h_t = (1/t) Σ_{i<t} y_i x_i
    ols                min-norm least squares on the prefix
    ridge              (G_t + σ²I)⁻¹ b_t: the Bayes posterior mean under w ~ N(0, I), noise σ²
    gd_1               one GD step from 0 with η = t/(t + d + 1) (optimal for isotropic Gaussian x)
    gd_opt             one GD step with the task-aware optimal η*(t) (Σ, uniform inputs, noise)
    gd_5               five GD steps with η(t) = 1/(λ_max(Σ)(1 + √(d/t))²) (GD lr="stable")
    preconditioned_gd  h_tᵀ Γ_t⁻¹ x_t, the trained one-layer LSA's limit (ZFB)
    knn_3              mean label of the 3 nearest previous inputs

Multi-task regression (y (..., T, I), the query only; estimators/multihead.py):
    multitask_gd           one GD step from 0 per task block, at its optimal η
    multitask_centred_gd   one GD step on centred data per task ("debiased GD"), at its optimal η
    multitask_ridge        the Bayes posterior mean per task (min-norm OLS when noiseless)
"""

from __future__ import annotations

from typing import Callable

from icldyn.errors import UsageError
from icldyn.estimators.base import Estimator
from icldyn.estimators.knn import KNN
from icldyn.estimators.linear import GD, OLS, Averaging, PreconditionedGD, Ridge, Zero, one_step_optimal_lr
from icldyn.estimators.multihead import MultitaskCentredGD, MultitaskGD, MultitaskRidge
from icldyn.registry import Registry

ESTIMATORS: Registry[Callable[..., Estimator]] = Registry("estimator")


def _named(name: str, cls, **defaults):
    """A factory (task, **params) -> cls(task, **defaults, **params) whose instances carry `name`."""
    def factory(task, **params) -> Estimator:
        try:
            est = cls(task, **{**defaults, **params})
        except TypeError as err:  # an unknown keyword: say which estimator and which parameter
            raise UsageError(f"estimator {name!r}: {err}") from None
        est.name = name
        return est
    factory.__doc__ = cls.__doc__
    return factory


ESTIMATORS.register("zero", _named("zero", Zero))
ESTIMATORS.register("averaging", _named("averaging", Averaging))
ESTIMATORS.register("ols", _named("ols", OLS))
ESTIMATORS.register("ridge", _named("ridge", Ridge))
ESTIMATORS.register("gd_1", _named("gd_1", GD, steps=1, lr="isotropic"))
ESTIMATORS.register("gd_opt", _named("gd_opt", GD, steps=1, lr="optimal"))
ESTIMATORS.register("gd_5", _named("gd_5", GD, steps=5, lr="stable"))
ESTIMATORS.register("preconditioned_gd", _named("preconditioned_gd", PreconditionedGD))
ESTIMATORS.register("knn_3", _named("knn_3", KNN, k=3))
ESTIMATORS.register("multitask_gd", _named("multitask_gd", MultitaskGD))
ESTIMATORS.register("multitask_centred_gd", _named("multitask_centred_gd", MultitaskCentredGD))
ESTIMATORS.register("multitask_ridge", _named("multitask_ridge", MultitaskRidge))


def estimator_names() -> list[str]:
    """The registered names, sorted."""
    return list(ESTIMATORS)


def make_estimator(name: str, task, **params) -> Estimator:
    """ESTIMATORS[name](task, **params), with a clear error for an unknown name or parameter."""
    return ESTIMATORS[name](task, **params)


__all__ = ["ESTIMATORS", "Estimator", "GD", "KNN", "OLS", "Averaging", "PreconditionedGD", "Ridge", "Zero",
           "estimator_names", "make_estimator", "one_step_optimal_lr"]


# n-gram Markov chains (tasks/ngram_markov.py): in-context unigram, Bayes n-gram, GIH, oracle
from icldyn.estimators.ngram import NGRAM_ESTIMATORS  # noqa: E402

for _name, _factory in NGRAM_ESTIMATORS.items():
    ESTIMATORS.register(_name, _factory)

# binary classification (tasks/binary_classification.py): per-prompt learners on the context
from icldyn.estimators.classification import CLASSIFIERS  # noqa: E402

for _name, (_cls, _defaults) in CLASSIFIERS.items():
    ESTIMATORS.register(_name, _named(_name, _cls, **_defaults))
