"""Experiment registry: one module per experiment, one line here."""

from __future__ import annotations

import warnings
from pathlib import Path

from icldyn.config import build, load_yaml, upgrade_config_dict
from icldyn.errors import UsageError
from icldyn.registry import Registry

EXPERIMENTS: Registry = Registry("experiment")


def _register_all() -> None:
    from icldyn.experiments.exact_dynamics import ExactDynamics
    from icldyn.experiments.feature_convergence import FeatureConvergence
    from icldyn.experiments.grokking import Grokking
    from icldyn.experiments.induction import InductionFullExperiment, InductionNgram
    from icldyn.experiments.linreg_gpt import LinRegGPT
    from icldyn.experiments.linreg_lsa import LinRegLSA

    for exp in (LinRegLSA(), LinRegGPT(), ExactDynamics(), FeatureConvergence()):
        EXPERIMENTS.register(exp.name, exp)
    for exp in (InductionNgram(), InductionFullExperiment(), Grokking()):
        EXPERIMENTS.register(exp.name, exp)
    from icldyn.experiments.classification_icl import ClassificationICL; EXPERIMENTS.register(ClassificationICL.name, ClassificationICL())  # noqa: E702
    from icldyn.experiments.multihead_tasks import MultiheadTasks; EXPERIMENTS.register(MultiheadTasks.name, MultiheadTasks())  # noqa: E702
    from icldyn.experiments.softmax_regression import SoftmaxRegression; EXPERIMENTS.register(SoftmaxRegression.name, SoftmaxRegression())  # noqa: E702
    from icldyn.experiments.attention_emergence import AttentionEmergence; EXPERIMENTS.register(AttentionEmergence.name, AttentionEmergence())  # noqa: E702
    from icldyn.experiments.exact_dynamics_vector import ExactDynamicsVector; EXPERIMENTS.register(ExactDynamicsVector.name, ExactDynamicsVector())  # noqa: E702


def config_from_dict(data: dict):
    """Type a raw config (a run directory's config.yaml) by its experiment's config class.

    A config written by an older icldyn may hold keys that have since been retired: they are
    dropped with a warning each (`upgrade_config_dict`), so old run directories stay loadable."""
    if not isinstance(data, dict) or "experiment" not in data:
        raise UsageError("not an icldyn config (no 'experiment' key)")
    cls = EXPERIMENTS[data["experiment"]].config_class
    data, notes = upgrade_config_dict(data, cls)
    for note in notes:
        warnings.warn(f"old config: {note}", UserWarning, stacklevel=2)
    return build(cls, data)


def config_from_yaml(path: Path):
    return config_from_dict(load_yaml(path))


_register_all()
