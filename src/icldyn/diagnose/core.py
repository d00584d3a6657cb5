"""`icldyn diagnose RUN_DIR`: the LLC and the essential dynamics of a stored run, at its checkpoints.

Everything goes under RUN_DIR/diagnose/ (the run's own files are never touched):
- diagnose.yaml            the settings (SGLD, prompts), devinterp's version, the checkpoints used
- llc.parquet              step, time, seed, llc, llc_std (over chains), init_loss
- llc_traces.parquet       step, seed, chain, sgld_step, burnin, loss: every chain's loss, to judge convergence
- essential_dynamics.parquet  step, time, seed, pc1..pck, speed, turn, event ('' | speed_peak | turn)
- summary.json             explained variance, event times, the run's phases, the final LLC
- llc.png, essential_dynamics.png  (report/diagnose.py)
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from icldyn import store
from icldyn.analysis import essential_dynamics as ed
from icldyn.config import parse_value, validation_message
from icldyn.errors import UsageError
from icldyn.probes.essential_dynamics import fixed_prompts, model_outputs
from icldyn.probes.llc import LLCSettings, model_llc, sgld_factory
from icldyn.train.schedule import time_at
from icldyn.trained import Trained, load_trained

LLC_COLUMNS = ["step", "time", "seed", "llc", "llc_std", "init_loss"]
TRACE_COLUMNS = ["step", "seed", "chain", "sgld_step", "burnin", "loss"]


class EssentialSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_prompts: int = Field(default=64, gt=0, description="fixed prompts whose outputs form the trajectory")
    prompt_seed: int = Field(default=20_202, description="eval-stream seed of those prompts")
    components: int = Field(default=3, ge=2, le=3, description="principal components kept")
    speed_prominence: float = Field(default=ed.SPEED_PROMINENCE, gt=0)
    turn_prominence: float = Field(default=ed.TURN_PROMINENCE, gt=0)


class DiagnoseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    llc: LLCSettings = LLCSettings()
    essential_dynamics: EssentialSettings = EssentialSettings()
    max_checkpoints: int | None = Field(default=None, gt=1, description="use at most this many checkpoints "
                                        "(evenly among the stored ones, first and last kept); default all")


def parse_settings(overrides: list[str] | None) -> DiagnoseSettings:
    """Settings from `key=value` overrides (`llc.draws=100`, `essential_dynamics.n_prompts=32`)."""
    data: dict = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set takes key=value (got {item!r}); keys: llc.<field>, essential_dynamics.<field>, "
                             "max_checkpoints")
        node = data
        *head, last = key.split(".")
        for part in head:
            node = node.setdefault(part, {})
        node[last] = parse_value(value)
    try:
        return DiagnoseSettings.model_validate(data)
    except ValidationError as err:
        raise UsageError(validation_message(err).replace("invalid config", "invalid diagnose setting")) from None


@dataclass
class Diagnosis:
    path: Path
    steps: list[int]
    llc: pd.DataFrame | None = None
    essential: pd.DataFrame | None = None
    summary: dict = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def chosen_steps(steps: list[int], limit: int | None) -> list[int]:
    if limit is None or len(steps) <= limit:
        return steps
    index = np.unique(np.round(np.linspace(0, len(steps) - 1, limit)).astype(int))
    return [steps[i] for i in index]


def set_params(trained: Trained, step: int) -> dict[str, torch.Tensor]:
    """Load checkpoint `step` into trained.model; returns its parameters {name: (S, ...)}."""
    params = trained.run.checkpoint(step)
    with torch.no_grad():
        for name, p in trained.model.named_parameters():
            p.copy_(params[name].to(p.dtype))
    return params


def llc_over_checkpoints(trained: Trained, steps: list[int], times: np.ndarray, settings: LLCSettings,
                         progress=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """LLC per (checkpoint, seed) and the chains' loss traces."""
    exp, config, task = trained.experiment, trained.config, trained.task
    batch = fixed_prompts(task, settings.n_prompts, settings.prompt_seed)
    build = lambda members: exp.build_model(config, task, list(range(members)))  # noqa: E731
    rows, traces = [], []
    for k, (step, time) in enumerate(zip(steps, times)):
        res = model_llc(build, trained.run.checkpoint(step), batch, settings)
        for i, seed in enumerate(trained.seeds):
            rows.append({"step": step, "time": float(time), "seed": seed, "llc": float(res.llc[i]),
                         "llc_std": float(res.llc_std[i]), "init_loss": float(res.init_loss[i])})
        S, C, T = res.traces.shape
        s_idx, c_idx, t_idx = np.meshgrid(np.arange(S), np.arange(C), np.arange(T), indexing="ij")
        traces.append(pd.DataFrame({"step": step, "seed": np.asarray(trained.seeds)[s_idx.ravel()],
                                    "chain": c_idx.ravel(), "sgld_step": t_idx.ravel(),
                                    "burnin": t_idx.ravel() < settings.burnin, "loss": res.traces.ravel()}))
        if progress:
            progress("llc", k + 1, len(steps))
    return pd.DataFrame(rows, columns=LLC_COLUMNS), pd.concat(traces, ignore_index=True)


def outputs_over_checkpoints(trained: Trained, steps: list[int], settings: EssentialSettings) -> np.ndarray:
    """(S, T, F): every seed's outputs on the fixed prompts at every checkpoint."""
    batch = fixed_prompts(trained.task, settings.n_prompts, settings.prompt_seed)
    kind = getattr(trained.task, "loss_kind", "mse")
    out = []
    for step in steps:
        set_params(trained, step)
        out.append(model_outputs(trained.model, batch, kind).cpu().numpy())
    return np.stack(out, axis=1)


def essential_frame(outputs: np.ndarray, steps: list[int], times: np.ndarray, seeds: list[int],
                    settings: EssentialSettings) -> tuple[pd.DataFrame, dict]:
    """The projected trajectory with speed, turning rate and events per seed, and a summary."""
    keep = times > 0  # ln t: the step-0 checkpoint (t = 0) has no place on the log clock
    t = times[keep]
    frames, summary = [], {}
    for i, seed in enumerate(seeds):
        z, explained = ed.pca_trajectory(outputs[i][keep], settings.components)
        speed, turn = ed.speed_and_turning(t, z)
        ev = ed.events(t, z, settings.speed_prominence, settings.turn_prominence)
        f = pd.DataFrame({"step": np.asarray(steps)[keep], "time": t, "seed": seed, "speed": speed, "turn": turn})
        for j in range(settings.components):
            f[f"pc{j + 1}"] = z[:, j] if j < z.shape[1] else 0.0
        f["event"] = ""
        for name, when in ev.items():
            f.loc[f["time"].isin(when), "event"] = name
        frames.append(f)
        summary[str(seed)] = {"explained_variance": explained.tolist(),
                              **{name: when.tolist() for name, when in ev.items()}}
    return pd.concat(frames, ignore_index=True), summary


def diagnose(run_dir: str | Path, *, llc: bool = True, essential_dynamics: bool = True,
             settings: DiagnoseSettings | None = None, progress=None) -> Diagnosis:
    """Compute the diagnostics asked for over the stored checkpoints and write them under
    RUN_DIR/diagnose/ (see the module doc). Raises UsageError with one sentence on bad input."""
    if not (llc or essential_dynamics):
        raise UsageError("nothing to diagnose: pass --llc and/or --essential-dynamics")
    settings = settings or DiagnoseSettings()
    if llc:
        sgld_factory()  # the optional extra, before any work
    trained = load_trained(run_dir)
    steps = chosen_steps(trained.run.checkpoint_steps, settings.max_checkpoints)
    times = time_at(trained.config.train, steps)
    out = trained.run.path / "diagnose"
    result = Diagnosis(out, steps)
    meta = _previous_meta(out)  # a part not recomputed keeps its record (e.g. --llc after --essential-dynamics)
    meta.update({"run": str(trained.run.path), "seeds": trained.seeds,
                 "max_checkpoints": settings.max_checkpoints})
    if llc:
        frame, traces = llc_over_checkpoints(trained, steps, times, settings.llc, progress)
        diverged = sorted({int(x) for x in frame.loc[frame["llc"].isna(), "step"]})
        meta["llc"] = {"settings": settings.llc.model_dump(), "n_beta": settings.llc.nbeta(),
                       "devinterp": importlib.metadata.version("devinterp"), "steps": steps,
                       "diverged_steps": diverged}
        result.summary["llc_diverged_steps"] = diverged
        store.write_table(out / "llc.parquet", frame, LLC_COLUMNS)
        store.write_table(out / "llc_traces.parquet", traces, TRACE_COLUMNS)
        result.llc = frame
        last = frame[frame["step"] == frame["step"].max()]
        result.summary["llc_final"] = {str(s): v for s, v in zip(last["seed"], last["llc"])}
    if essential_dynamics:
        outputs = outputs_over_checkpoints(trained, steps, settings.essential_dynamics)
        frame, summary = essential_frame(outputs, steps, times, trained.seeds, settings.essential_dynamics)
        cols = ["step", "time", "seed"] + [f"pc{j + 1}" for j in range(settings.essential_dynamics.components)] \
            + ["speed", "turn", "event"]
        store.write_table(out / "essential_dynamics.parquet", frame, cols)
        result.essential = frame
        meta["essential_dynamics"] = {"settings": settings.essential_dynamics.model_dump(), "steps": steps}
        result.summary["essential_dynamics"] = summary
    result.summary = {**_previous_summary(out), **result.summary}
    store.write_text(out / "diagnose.yaml", yaml.safe_dump(meta, sort_keys=False))
    store.write_json(out / "summary.json", result.summary)
    from icldyn.report.diagnose import write_figures

    write_figures(trained.run)
    result.files = sorted(out.glob("*"))
    return result


def _previous_meta(out: Path) -> dict:
    path = out / "diagnose.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def _previous_summary(out: Path) -> dict:
    """The summary of an earlier call (e.g. --llc after --essential-dynamics): parts not recomputed stay."""
    path = out / "summary.json"
    return store.read_json(path) if path.exists() else {}
