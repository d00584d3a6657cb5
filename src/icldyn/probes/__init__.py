"""Probe registry: name → factory(config, task, **params) -> Probe (see `probes/base.py`).

An experiment names the probes it records (`build_probes(config, task, ["baseline", ("alignment",
{"name": "ols"})])`); a new probe is one module plus one line here.
"""

from __future__ import annotations

from typing import Any, Sequence

from icldyn.probes.base import Probe, ProbeFactory, RecordContext
from icldyn.probes.classification import classification_probe
from icldyn.probes.essential_dynamics import essential_dynamics_probe
from icldyn.probes.features import feature_probe
from icldyn.probes.grokking import grokking_probe
from icldyn.probes.induction import induction_probe
from icldyn.probes.llc import llc_probe
from icldyn.probes.lsa import effective_matrix_probe
from icldyn.probes.lsa_modes import lsa_mode_probe, spectral_probe
from icldyn.probes.multihead import (attention_probe, estimator_probe, projected_loss_probe, semi_singular_probe,
                                     task_loss_probe)
from icldyn.probes.regression import alignment_probe, baseline_probe
from icldyn.probes.softmax_regression import softmax_regression_probe
from icldyn.probes.spectral import matrix_spectral_probe
from icldyn.probes.vector_modes import vector_mode_probe
from icldyn.registry import Registry

PROBES: Registry[ProbeFactory] = Registry("probe")
PROBES.register("baseline", baseline_probe)
PROBES.register("alignment", alignment_probe)
PROBES.register("lsa_effective_matrix", effective_matrix_probe)
PROBES.register("lsa_modes", lsa_mode_probe)
PROBES.register("spectral", spectral_probe)
PROBES.register("matrix_spectral", matrix_spectral_probe)
PROBES.register("feature_attention", feature_probe)
PROBES.register("induction", induction_probe)
PROBES.register("grokking", grokking_probe)
PROBES.register("multihead_semi_singular", semi_singular_probe)
PROBES.register("multihead_projected_loss", projected_loss_probe)
PROBES.register("multihead_task_loss", task_loss_probe)
PROBES.register("multihead_attention", attention_probe)
PROBES.register("multihead_estimators", estimator_probe)
PROBES.register("softmax_regression", softmax_regression_probe)
PROBES.register("classification", classification_probe)
PROBES.register("llc", llc_probe)
PROBES.register("essential_dynamics", essential_dynamics_probe)
PROBES.register("vector_modes", vector_mode_probe)


def build_probes(config, task, specs: Sequence[str | tuple[str, dict[str, Any]]]) -> list[Probe]:
    """The probes named by `specs` (a name, or (name, params)), built for this config and task."""
    out = []
    for spec in specs:
        name, params = (spec, {}) if isinstance(spec, str) else spec
        out.append(PROBES[name](config, task, **params))
    return out


__all__ = ["PROBES", "Probe", "ProbeFactory", "RecordContext", "build_probes"]
