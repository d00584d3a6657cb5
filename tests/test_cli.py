"""Bad input gets one clear sentence and exit code 2; the happy path prints a claims table."""

import pytest
import typer
from typer.testing import CliRunner

from icldyn.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_unknown_experiment_lists_known_ones():
    r = invoke("run", "nosuch")
    assert r.exit_code == 2
    assert "unknown experiment 'nosuch'" in r.output and "linreg-lsa" in r.output
    assert "Traceback" not in r.output


def test_unknown_key_suggests_closest():
    r = invoke("run", "linreg-lsa", "--set", "train.lrr=0.1")
    assert r.exit_code == 2 and "did you mean 'train.lr'" in r.output


def test_out_of_range_value_names_field():
    r = invoke("run", "linreg-lsa", "--set", "task.d=-3")
    assert r.exit_code == 2 and "task.d" in r.output and "greater than 0" in r.output


def test_claims_on_a_directory_that_is_not_a_run(tmp_path):
    r = invoke("claims", str(tmp_path))
    assert r.exit_code == 2 and "not an icldyn run directory" in r.output


def test_list_names_every_experiment():
    r = invoke("list")
    assert r.exit_code == 0 and "linreg-lsa" in r.output and "linreg-gpt" in r.output


def test_run_prints_claims_and_claims_recomputes(tmp_path):
    args = ["run", "linreg-lsa", "--out", str(tmp_path), "--set", "task.d=3", "--set", "task.n_points=10",
            "--set", "train.steps=30", "--set", "train.eval_prompts=1000", "--set", "sampled_check=false",
            "--set", "task.eigenvalues=[1,0.5,0.25]"]
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    assert "test_loss_at_optimum" in r.output and "run directory" in r.output
    strict = invoke(*args, "--strict")  # 30 steps do not converge: a failed claim exits 1 under --strict
    assert strict.exit_code == 1
    run_dir = next((tmp_path / "linreg-lsa").iterdir())
    again = invoke("claims", str(run_dir))
    assert again.exit_code == 0 and "vU_equals_gamma_inv" in again.output


def test_divergence_exit_code(tmp_path):
    r = invoke("run", "linreg-lsa", "--out", str(tmp_path), "--set", "train.lr=1e4", "--set", "train.steps=30",
               "--set", "sampled_check=false", "--set", "task.d=3", "--set", "task.eigenvalues=[1,1,1]")
    assert r.exit_code == 3 and "diverged" in r.output


def test_reproduce_writes_a_summary(tmp_path, monkeypatch):
    from icldyn.experiments import EXPERIMENTS

    exp = EXPERIMENTS["linreg-lsa"]
    tiny = {"task.d": 3, "task.n_points": 10, "task.eigenvalues": [1, 0.5, 0.25], "train.steps": 20,
            "train.eval_prompts": 1000, "sampled_check": False}
    monkeypatch.setitem(type(exp).presets, "quick", tiny)
    r = invoke("reproduce", "linreg-lsa", "--out", str(tmp_path))
    assert r.exit_code == 0, r.output
    summary = next(tmp_path.glob("reproduce-*/summary.md")).read_text()
    assert "| linreg-lsa | test_loss_at_optimum" in summary and "FAIL" in summary  # 20 steps do not converge


def test_reproduce_unknown_experiment(tmp_path):
    r = invoke("reproduce", "nosuch", "--out", str(tmp_path))
    assert r.exit_code == 2 and "unknown experiment 'nosuch'" in r.output


def test_an_interrupted_run_says_how_to_resume(monkeypatch, tmp_path):
    from icldyn import api

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "run", interrupted)
    r = invoke("run", "linreg-lsa", "--out", str(tmp_path))
    assert r.exit_code == 130
    assert "interrupted" in r.output and "--resume" in r.output and "Traceback" not in r.output


def test_error_messages_are_printed_as_text_not_markup(tmp_path):
    """A message holding brackets (`pip install 'icldyn[slurm]'`, `[code]` suffixes) keeps them."""
    from icldyn import cli
    from icldyn.errors import UsageError

    # rich would swallow `[slurm]` as a style tag without escaping
    cli.err_console.record = True
    with pytest.raises(typer.Exit):
        cli._fail(UsageError("install it: pip install 'icldyn[slurm]'"))
    assert "icldyn[slurm]" in cli.err_console.export_text()


def test_palette_cycles_past_ten_series():
    from icldyn.report.plots import PALETTE

    assert PALETTE[13] == PALETTE[3] and PALETTE[-1] == PALETTE[9] and len(PALETTE[2:5]) == 3


def test_refused_input_prints_no_empty_progress_display():
    """The progress display appears with its first task: bad input prints its sentence and nothing else."""
    r = CliRunner().invoke(app, ["run", "nope"])
    assert r.exit_code == 2
    assert r.output.splitlines()[0].startswith("error: unknown experiment 'nope'")
