"""Hypothesis-generated command lines: never a traceback; every invalid input exits 2 with one
sentence and writes nothing to the output folder; a valid one passes `--validate` (exit 0, nothing
written). `--validate` builds and checks the whole config, the sweep values and the memory estimate
exactly as a run would, then stops before training."""

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from icldyn.cli import app

runner = CliRunner()
FUZZED = [0]  # inputs tried, counted for the closing note

KEYS = ["task.d", "task.n_points", "task.eigenvalues", "task.noise_std", "task.name", "model.name",
        "model.n_layers", "train.lr", "train.steps", "train.batch_size", "train.optimizer", "train.lrs",
        "train.checkpoint_every", "train.schedule", "train.stages", "seed", "n_seeds", "device", "sampled_check",
        "train.lrr", "tusk.d", "task", "", ".", "task..d", "task.d.x", "ключ", "task.é", "train.lr\x00"]
NASTY = ["nan", "inf", "-inf", "1e400", "-1e400", "1e10", "99999999999999999999999999", "-1", "0", "0.5",
         "[1,2", "[1, [2]]", "{a: [}", "{", "}", "]", "!!python/object/apply:os.system ['true']", "~", "null",
         "", " ", "yes", "no", "[]", "[nan]", "[inf, 1]", "'", "\"", "\\", "ü∂", "🙂", "a=b=c", "&a", "*a",
         "%TAG", "---", "- 1\n- 2", "[1e400]", "0x10", "1_000"]

plausible = st.one_of(st.integers(1, 40).map(str), st.floats(0.001, 0.5).map(repr),
                      st.lists(st.integers(1, 40), min_size=1, max_size=3).map(lambda xs: str(xs)))
values = st.one_of(
    plausible,
    st.sampled_from(NASTY),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.lists(st.one_of(st.floats(allow_nan=True), st.integers(-5, 5)), max_size=6).map(
        lambda xs: "[" + ",".join(repr(x) for x in xs) + "]"),
    st.text(max_size=12),
)
sets = st.lists(st.tuples(st.sampled_from(KEYS) | st.text(max_size=8), values), min_size=1, max_size=2)


def _check(args: list[str], out: Path) -> None:
    FUZZED[0] += 1
    r = runner.invoke(app, args)
    # a raised exception other than the typer exit is a traceback a user would have seen
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, repr(r.exception))
    assert r.exit_code in (0, 2), (args, r.exit_code, r.output)
    assert "Traceback" not in r.output
    assert not any(out.iterdir()), (args, "wrote into the output folder")
    if r.exit_code == 2:
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        usage = any(ln.startswith(("Usage:", "Try ", "╭", "│", "╰")) for ln in lines)  # click's own usage box
        assert usage or (len(lines) == 1 and lines[0].startswith("error:")), (args, r.output)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(sets)
def test_fuzzed_set_values(pairs):
    with tempfile.TemporaryDirectory() as tmp:
        args = ["run", "linreg-lsa", "--validate", "--out", tmp]
        for key, value in pairs:
            args += ["--set", f"{key}={value}"]
        _check(args, Path(tmp))


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KEYS[:12]), st.one_of(values, plausible.map(lambda v: v if v.startswith("[") else f"[{v}]")), st.one_of(st.none(), st.integers(-3, 10**12)),
       st.sampled_from(["quick", "quick", "paper", "nosuch", "", "ü"]),
       st.sampled_from(["linreg-lsa", "linreg-lsa", "nosuch", "", "∂"]))
def test_fuzzed_sweeps_seeds_presets_experiments(key, value, seeds, preset, experiment):
    with tempfile.TemporaryDirectory() as tmp:
        args = ["run", experiment, "--validate", "--out", tmp, "--preset", preset, "--sweep", f"{key}={value}"]
        if seeds is not None:
            args += ["--seeds", str(seeds)]
        _check(args, Path(tmp))


def test_a_valid_generated_value_validates_and_writes_nothing(tmp_path):
    r = runner.invoke(app, ["run", "linreg-lsa", "--validate", "--out", str(tmp_path), "--set", "train.lr=0.05",
                            "--sweep", "train.steps=[10,20]"])
    assert r.exit_code == 0 and "valid" in r.output and not any(tmp_path.iterdir())
