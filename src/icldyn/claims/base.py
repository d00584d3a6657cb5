"""A claim: a paper's sentence made checkable, measured on a stored run against a bound fixed in code.

`Claim` is the result that lands in claims.json; `below`/`above` build one from per-seed values.
`ClaimSpec` is the claim as data (id, statement, source, how it is measured, what is expected),
registered where it is defined (an experiment's `<name>_claims.py`), so the claims of an
experiment read as a list and `icldyn claims DIR` can recompute every one of them from the store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Union

import numpy as np

from icldyn.registry import Registry


@dataclass
class Claim:
    """A paper's sentence made checkable: measured vs expected, fixed in code before the run."""

    id: str
    statement: str
    source: str
    measured: Optional[float]
    expected: str
    passed: Optional[bool]
    tolerance: Optional[str] = None
    per_seed: list[float] = field(default_factory=list)
    note: Optional[str] = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["measured"] = None if self.measured is None else float(self.measured)
        d["passed"] = None if self.passed is None else bool(self.passed)
        return d


def unmeasured(id, statement, source, expected, note, *, tolerance=None, per_seed=(), details=None) -> Claim:
    """A claim that could not be measured on this run: passed is None and the note says why."""
    return Claim(id, statement, source, None, expected, None, tolerance, list(per_seed), note, details or {})


def _judge(id, statement, source, values, bound, op, agg, tolerance, note, details) -> Claim:
    vals = np.asarray(values, dtype=float).reshape(-1)
    expected = f"{op} {bound:.4g}"
    if vals.size == 0 or not np.isfinite(vals).all():
        return unmeasured(id, statement, source, expected,
                          note or "could not be measured (missing or non-finite values)",
                          tolerance=tolerance, per_seed=vals.tolist(), details=details)
    m = float(getattr(np, agg)(vals))
    passed = m < bound if op == "<" else m > bound
    return Claim(id, statement, source, m, expected, bool(passed), tolerance, vals.tolist(), note, details or {})


def below(id, statement, source, values, bound, *, tolerance=None, agg="max", note=None, details=None) -> Claim:
    """Claim that a per-seed quantity is below `bound` (aggregate: the worst seed by default)."""
    return _judge(id, statement, source, values, bound, "<", agg, tolerance, note, details)


def above(id, statement, source, values, bound, *, tolerance=None, agg="min", note=None, details=None) -> Claim:
    """Claim that a per-seed quantity is above `bound` (aggregate: the worst seed by default)."""
    return _judge(id, statement, source, values, bound, ">", agg, tolerance, note, details)


# -- claims as data ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Below:
    """Expected: the aggregate (worst seed by default) of the measured values is below `bound`."""

    bound: float
    agg: str = "max"


@dataclass(frozen=True)
class Above:
    """Expected: the aggregate (worst seed by default) of the measured values is above `bound`."""

    bound: float
    agg: str = "min"


@dataclass(frozen=True)
class Judged:
    """Expected: an ordering or interval the measurement judges itself (its `passed`), shown as `text`."""

    text: str


Expect = Union[Below, Above, Judged]


@dataclass
class Measurement:
    """What a spec's `measure` returns.

    values: per-seed values (for Below/Above), or the one measured value (Judged).
    fmt: fields filled into the spec's statement; statement: replaces it whole.
    passed: the verdict, for Judged expectations only. expect: a bound that depends on the run's
    config (still fixed before the run), replacing the spec's; tolerance: likewise, its text.
    """

    values: Any = ()
    details: dict = field(default_factory=dict)
    note: Optional[str] = None
    fmt: dict = field(default_factory=dict)
    statement: Optional[str] = None
    passed: Optional[bool] = None
    per_seed: Optional[list] = None
    expect: Optional[Expect] = None
    tolerance: Optional[str] = None


CLAIM_SPECS: "Registry[ClaimSpec]" = Registry("claim")  # every spec, as "<experiment>:<id>"

Measure = Callable[[Any], Union[Measurement, Claim, None]]


@dataclass(frozen=True)
class ClaimSpec:
    """One claim of an experiment: measured by `measure(run)` on the stored run (or on each view of
    it, `per_view`), judged against `expect`. `measure` may return None when the claim does not
    apply to this run (it is then left out), or a ready `Claim` for the rare claim whose id or shape
    depends on the run (a per-view one gets the view's suffix appended to its id)."""

    id: str
    statement: str
    source: str
    expect: Expect
    measure: Measure
    tolerance: Optional[str] = None
    per_view: bool = False

    def evaluate(self, run, suffix: str = "") -> Optional[Claim]:
        m = self.measure(run)
        if isinstance(m, Claim) and suffix:  # a ready claim of one view: the view's suffix, as for the rest
            m.id = f"{m.id}{suffix}"
        if m is None or isinstance(m, Claim):
            return m
        ident = f"{self.id}{suffix}"
        statement = m.statement if m.statement is not None else self.statement.format(**m.fmt)
        expect = m.expect or self.expect
        tolerance = m.tolerance if m.tolerance is not None else self.tolerance
        if isinstance(expect, Below):
            return below(ident, statement, self.source, m.values, expect.bound, tolerance=tolerance,
                         agg=expect.agg, note=m.note, details=m.details)
        if isinstance(expect, Above):
            return above(ident, statement, self.source, m.values, expect.bound, tolerance=tolerance,
                         agg=expect.agg, note=m.note, details=m.details)
        value = None if m.values is None or np.ndim(m.values) else float(m.values)
        per_seed = list(m.per_seed or [])
        if value is None or not np.isfinite(value) or m.passed is None:
            return unmeasured(ident, statement, self.source, expect.text, m.note or "could not be measured",
                              tolerance=tolerance, per_seed=per_seed, details=m.details)
        return Claim(ident, statement, self.source, value, expect.text, bool(m.passed), tolerance,
                     per_seed, m.note, m.details)


class ClaimList:
    """The claims of one experiment, in the order they are registered (and printed).

        CLAIMS = ClaimList("linreg-lsa", views=my_views)

        @CLAIMS.claim("vU_equals_gamma_inv", "The effective matrix vU converges to Γ⁻¹ ({mode})",
                      SOURCE, Below(0.05), tolerance="5%", per_view=True)
        def _(run): return Measurement(values, fmt={"mode": ...})

    `views(run)` gives (id suffix, run) pairs for per-view claims (default: "" and the run itself
    for a single run, "[name]" and each variant of a sweep directory).
    """

    def __init__(self, experiment: str, views: Callable | None = None):
        self.experiment = experiment
        self.views = views or default_views
        self.specs: list[ClaimSpec] = []

    def claim(self, id: str, statement: str, source: str, expect: Expect, *, tolerance: str | None = None,
              per_view: bool = False):
        def register(measure: Measure) -> Measure:
            self.add(ClaimSpec(id, statement, source, expect, measure, tolerance, per_view))
            return measure
        return register

    def add(self, spec: ClaimSpec) -> ClaimSpec:
        if any(s.id == spec.id for s in self.specs):
            raise ValueError(f"claim {spec.id!r} of {self.experiment} is registered twice")
        self.specs.append(spec)
        CLAIM_SPECS.register(f"{self.experiment}:{spec.id}", spec)
        return spec

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.specs]

    def evaluate(self, run) -> list[Claim]:
        """Every claim, in registration order; a block of consecutive per-view specs is evaluated
        view by view (all of a view's claims together, as a claims table reads best)."""
        out, block = [], []
        for spec in self.specs + [None]:
            if spec is not None and spec.per_view:
                block.append(spec)
                continue
            for suffix, r in self.views(run) if block else []:
                out += [c for s in block if (c := s.evaluate(r, suffix)) is not None]
            block = []
            if spec is not None and (c := spec.evaluate(run)) is not None:
                out.append(c)
        return out


def default_views(run) -> list[tuple[str, Any]]:
    """("", run) for a single run; ("[name]", variant) for each variant of a sweep directory."""
    return [(f"[{name}]", r) for name, r in run.variants.items()] or [("", run)]

