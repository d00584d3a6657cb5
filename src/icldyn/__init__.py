"""icldyn: a laboratory for the training dynamics of in-context learning.

    import icldyn
    run = icldyn.run("linreg-lsa", preset="quick", overrides={"train.steps": 2000})
    run.metrics, run.claims, run.checkpoint()
    icldyn.load_run(run.path)
"""

from icldyn.version import __version__


def run(experiment: str, preset: str = "quick", overrides=None, **kwargs):
    """Train `experiment` and compute its claims; see `icldyn.api.run`."""
    from icldyn.api import run as _run

    return _run(experiment, preset, overrides, **kwargs)


def load_run(path):
    """Load a stored run directory (config, metrics DataFrame, curves, claims, checkpoints)."""
    from icldyn.api import load_run as _load

    return _load(path)


def runs(root="runs", **kwargs):
    """The run directories under `root` as a DataFrame; see `icldyn.api.runs`."""
    from icldyn.api import runs as _runs

    return _runs(root, **kwargs)


__all__ = ["run", "load_run", "runs", "__version__"]
