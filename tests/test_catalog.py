"""`icldyn runs`: the run directories under a folder, queried in place with DuckDB, each with its state.

A folder holds one complete run, copies of it killed mid-way (env.json not complete, no claims) and
damaged ones (Parquet bytes overwritten, config.yaml not YAML, env.json cut short): each is listed
with the state we gave it, and none stops the listing.
"""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

import icldyn
from browser import tiny_run
from icldyn import verify
from icldyn.analysis import catalog as cat
from icldyn.cli import app
from icldyn.errors import UsageError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run = tiny_run(root / "a", seeds=2)
    fast = tiny_run(root / "b", seeds=1, **{"train.lr": 0.02})
    base = run.path.parent
    killed = base / "killed-s0-1"
    shutil.copytree(run.path, killed)
    env = json.loads((killed / "env.json").read_text())
    (killed / "env.json").write_text(json.dumps({**env, "complete": False, "end": None}))
    (killed / "claims.json").unlink()
    for name, damage in {"bad-parquet": lambda p: (p / "metrics.parquet").write_bytes(b"PAR1 not parquet"),
                         "bad-yaml": lambda p: (p / "config.yaml").write_text("experiment: [unclosed\n  : :"),
                         "bad-env": lambda p: (p / "env.json").write_text('{"complete": tr')}.items():
        shutil.copytree(run.path, base / name)
        damage(base / name)
    return {"root": root, "run": run, "fast": fast, "base": base}


def test_every_state_is_listed(folder):
    table = icldyn.runs(folder["root"])
    by_name = {p.rsplit("/", 1)[1]: r for p, r in zip(table["path"], table.to_dict("records"))}
    assert by_name[folder["run"].path.name]["state"] == "complete"
    assert by_name["killed-s0-1"]["state"] == "incomplete"
    for name in ("bad-parquet", "bad-yaml", "bad-env"):
        assert by_name[name]["state"] == "damaged" and by_name[name]["problems"]
    assert len(table) == 6
    good = by_name[folder["run"].path.name]
    stored = json.loads((folder["run"].path / "claims.json").read_text())["claims"]
    assert good["claims_total"] == len(stored)
    assert good["claims_passed"] == sum(c["passed"] is True for c in stored)
    assert good["experiment"] == "linreg-lsa" and good["seeds"] == "0-1" and good["preset"] == "quick"
    assert good["config_hash"] == folder["run"].path.name.split("-s")[0] and good["wall_s"] >= 0


def test_where_filters_on_config_values(folder):
    lrs = {folder["run"].config.train.lr, folder["fast"].config.train.lr}
    assert len(lrs) == 2
    slow = icldyn.runs(folder["root"], where="train.lr >= 0.04")  # the default 0.05, not the 0.02 run
    assert {p.rsplit("/", 1)[1] for p in slow["path"]} == {folder["run"].path.name, "killed-s0-1"}
    assert len(icldyn.runs(folder["root"], where=["task.d = 3", "n_seeds = 2"])) >= 2
    assert len(icldyn.runs(folder["root"], experiment="linreg-gpt")) == 0


def test_bad_where_is_one_sentence(folder):
    with pytest.raises(UsageError, match="not a condition on config keys"):
        icldyn.runs(folder["root"], where="train.no_such_key > 1")
    r = CliRunner().invoke(app, ["runs", str(folder["root"]), "--where", "train.no_such_key > 1"])
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_cli_json(folder):
    r = CliRunner().invoke(app, ["runs", str(folder["root"]), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert {row["state"] for row in rows} == {"complete", "incomplete", "damaged"}
    assert CliRunner().invoke(app, ["runs", str(folder["root"])]).exit_code == 0
    assert CliRunner().invoke(app, ["runs", str(folder["root"] / "nope")]).exit_code == 2


def test_states_and_problems_come_from_the_verifier(folder):
    table = cat.catalog(folder["root"])
    for path, state, problems in zip(table["path"], table["state"], table["problems"]):
        result = verify.check_run_dir(path)
        assert state == result.state and problems == "; ".join(result.sentences())


def test_a_folder_whose_config_is_not_yaml_is_damaged(tmp_path):
    (tmp_path / "config.yaml").write_text("experiment: [unclosed")
    assert cat.check(tmp_path).state == "damaged"
    with pytest.raises(UsageError):
        cat.find_run_dirs(tmp_path / "missing")
