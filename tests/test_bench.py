"""`icldyn bench`: the cases' plumbing, FLOP counts and the reference model (no timings asserted)."""

import json
import math
import time

import pytest
import torch
from typer.testing import CliRunner

from icldyn import bench
from icldyn.bench import core
from icldyn.bench.gpt import GargTransformer, transformers_version
from icldyn.cli import app


def test_flop_counts_by_hand():
    # LSA: per prompt 2·d·D + 4·d·T + 6·N forward, ×3 for a training step
    assert core.lsa_flops(2, 4, 3) == 3 * 2 * (2 * 3 * 4 + 4 * 3 * 5 + 6 * 4)
    # GPT: 1 layer, width 2, d 1, N 1 → S = 3 tokens; 24·w² + 2·d·w + 2·w per token, 2·S²·w per prompt
    assert core.gpt_flops(1, 1, 1, 1, 2) == 3 * (3 * (24 * 4 + 4 + 4) + 2 * 9 * 2)


def test_throughput_and_interleaved():
    fig = core.throughput(0.5, 100, 2e9, peak_gflops=8.0, seeds=4)
    assert fig == {"steps_per_s": 2.0, "seeds_steps_per_s": 8.0, "prompts_per_s": 200.0, "gflops": 4.0,
                   "fraction_of_peak": 0.5}
    calls = []
    t = core.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=2, warmup=1)
    assert set(t) == {"a", "b"} and calls == ["a", "b", "a", "b", "a", "b"]


def test_run_benchmarks_writes_json_and_keeps_going_after_a_failing_case(tmp_path, monkeypatch):
    def fine(quick):
        return {"steps_per_s": 3.0, "batch_64": {"ensemble_speedup": 2.5}}

    def broken(quick):
        raise RuntimeError("boom")

    monkeypatch.setitem(bench.CASES._items, "fake_fine", fine)
    monkeypatch.setitem(bench.CASES._items, "fake_broken", broken)
    monkeypatch.setattr(bench, "peak_gflops", lambda n=2048: 1.0)
    monkeypatch.setattr(bench, "tune_malloc", lambda: False)  # leave the test process's allocator alone
    out = tmp_path / "bench.json"
    results = bench.run_benchmarks(quick=True, json_path=out, cases=["fake_broken", "fake_fine"])
    saved = json.loads(out.read_text())
    assert saved["fake_fine"]["batch_64"]["ensemble_speedup"] == 2.5
    assert "boom" in saved["fake_broken"]["error"]
    assert results["machine"]["matmul_peak_gflops"] == 1.0 and "cores" in saved["machine"]
    assert ("fake_fine/batch_64/ensemble_speedup", "2.5") in bench._rows("fake_fine", saved["fake_fine"])


def test_every_case_is_listed_and_the_default_order_covers_them():
    assert set(bench.default_cases()) == set(bench.CASES)
    for name in ("lsa_step", "lsa_ensemble", "lsa_population", "gpt_vs_gpt2", "prefix_estimators", "compile",
                 "threads", "allocator", "gpu"):
        assert name in bench.CASES
    result = CliRunner().invoke(app, ["bench", "--list"])
    assert result.exit_code == 0 and "lsa_ensemble" in result.output
    result = CliRunner().invoke(app, ["bench", "--case", "lsa_ensembel"])
    assert result.exit_code == 2 and "lsa_ensemble" in result.output


def test_gpu_case_is_skipped_with_a_note_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the GPU case would run")
    assert "no CUDA device" in bench.CASES["gpu"](quick=True)["skipped"]


def test_lsa_cases_run_tiny(monkeypatch):
    from icldyn.bench import lsa

    monkeypatch.setattr(core, "_PEAKS", {("cpu", torch.get_num_threads(), 2048): 50.0})
    trainer = lsa.lsa_trainer(3, 8)
    lsa.stepper(trainer, 2)()
    assert trainer.step == 2 and trainer.model.n_seeds == 3
    pop = lsa.lsa_trainer(5, 8, gradient="population", optimizer="gd")
    lsa.stepper(pop, 1)()
    assert pop.step == 1
    fns = lsa._ensemble_steppers(2, 4, 1)  # the compared steps of lsa_ensemble, shared data among them
    t = core.interleaved(fns, repeats=1, warmup=0, clock=time.process_time)
    assert set(t) == {"ensemble", "sequential", "ensemble_fixed", "sequential_fixed", "ensemble_shared", "sample"}
    assert all(v >= 0 for v in t.values())


@pytest.mark.skipif(transformers_version() is None, reason="transformers (the bench extra) is not installed")
def test_reference_model_is_garg_et_al_gpt2_with_read_in_and_out():
    torch.manual_seed(0)
    ref = GargTransformer(n_dims=3, n_points=5, n_embd=16, n_layer=2, n_head=2, attention="eager")
    x, y = torch.randn(4, 5, 3), torch.randn(4, 5)
    z = ref._combine(x, y)
    assert z.shape == (4, 10, 3) and torch.equal(z[:, 0::2], x) and torch.equal(z[:, 1::2, 0], y)
    assert (z[:, 1::2, 1:] == 0).all()
    pred = ref(x, y)
    assert pred.shape == (4, 5)
    # causal: the prediction at x_t does not see y_t
    y2 = y.clone()
    y2[:, 2] += 1.0
    assert torch.allclose(ref(x, y2)[:, :3], pred[:, :3]) and not torch.allclose(ref(x, y2)[:, 3:], pred[:, 3:])
    cfg = ref._backbone.config
    assert (cfg.resid_pdrop, cfg.embd_pdrop, cfg.attn_pdrop) == (0.0, 0.0, 0.0)
    sdpa = GargTransformer(3, 5, 16, 2, 2, attention="sdpa")
    sdpa.load_state_dict(ref.state_dict())
    assert torch.allclose(sdpa(x, y), pred, atol=1e-5)


def test_compile_falls_back_to_eager_with_a_note(monkeypatch):
    """A platform where torch.compile fails: the run goes on eagerly, the same as without it."""
    from icldyn.bench.lsa import lsa_trainer, stepper

    def broken_compile(fn, **kw):
        def call(*a, **k):
            raise RuntimeError("no C++ compiler")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    eager = lsa_trainer(2, 8)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        compiled = lsa_trainer(2, 8, compile=True)
        stepper(compiled, 3)()
    stepper(eager, 3)()
    assert "no C++ compiler" in compiled.compile_note
    for p, q in zip(eager.model.parameters(), compiled.model.parameters()):
        assert torch.equal(p, q)


def test_compile_flag_on_the_command_line_sets_the_config(monkeypatch, tmp_path):
    from icldyn import api

    seen = {}

    def fake_run(experiment, preset, overrides, **kw):
        seen["overrides"] = overrides
        raise api.UsageError("stop here")

    monkeypatch.setattr(api, "run", fake_run)
    result = CliRunner().invoke(app, ["run", "linreg-lsa", "--compile", "--set", "train.steps=3"])
    assert result.exit_code == 2 and seen["overrides"] == ["train.steps=3", "train.compile=true"]


def test_matmul_peak_is_positive():
    assert core.matmul_peak(64, repeats=1) > 0 and math.isfinite(core.matmul_peak(64, repeats=1))
