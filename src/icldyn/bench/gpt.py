"""The 4-layer, 4-head, width-128 GPT-style model against the field's reference architecture:
a Hugging Face `GPT2Model` with linear read-in and read-out, built as Garg et al. (2022) build it
(`TransformerModel` in their `models.py`), on the same interleaved prompts (d = 10, N = 40).

Both train with Adam (lr 1e-3) on ½·MSE at the x-tokens, float32, dropout 0, the same thread
count and the same fixed batch, their steps taking turns in one process. `transformers` is the
benchmark-only extra (`pip install -c constraints.txt -e ".[bench]"`); without it the case is
skipped with a note.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from icldyn.bench.core import gpt_flops, interleaved, load_average, peak_gflops, throughput

D, N_POINTS, LAYERS, HEADS, WIDTH = 10, 40, 4, 4, 128


class GargTransformer(nn.Module):
    """Garg et al.'s `TransformerModel`: read_in → GPT2Model(inputs_embeds) → read_out at the x-tokens."""

    def __init__(self, n_dims: int, n_points: int, n_embd: int, n_layer: int, n_head: int,
                 attention: str = "sdpa"):
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        config = GPT2Config(n_positions=2 * n_points, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False)
        self.n_dims = n_dims
        self._read_in = nn.Linear(n_dims, n_embd)
        self._backbone = GPT2Model._from_config(config, attn_implementation=attention)
        self._read_out = nn.Linear(n_embd, 1)

    @staticmethod
    def _combine(xs_b: torch.Tensor, ys_b: torch.Tensor) -> torch.Tensor:
        """Interleave x (B, T, d) and y (B, T) as x_1, (y_1, 0, …), x_2, … → (B, 2T, d)."""
        bsize, points, dim = xs_b.shape
        ys_b_wide = torch.cat((ys_b.view(bsize, points, 1), torch.zeros(bsize, points, dim - 1)), dim=2)
        return torch.stack((xs_b, ys_b_wide), dim=2).view(bsize, 2 * points, dim)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        embeds = self._read_in(self._combine(xs, ys))
        output = self._backbone(inputs_embeds=embeds).last_hidden_state
        return self._read_out(output)[:, ::2, 0]                                  # (B, T)


def transformers_version() -> str | None:
    try:
        import transformers
    except ImportError:
        return None
    return transformers.__version__


def gpt_steps(batch: int, with_reference: bool = True, seed: int = 0) -> dict:
    """Step callables of icldyn's GPT and (when available) the Garg/GPT2 reference, sdpa and eager."""
    from icldyn.models.gpt import GPT, GPTConfig
    from icldyn.tasks.linear_regression import LinearRegressionConfig, LinearRegressionTask

    task = LinearRegressionTask(LinearRegressionConfig(d=D, n_points=N_POINTS))  # T = N + 1 = 41 points
    data = task.sample([seed], 0, batch)
    x, y = data.x[0], data.y[0]
    torch.manual_seed(seed)

    def adam_step(model, loss_fn):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            loss = loss_fn()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    ours = GPT(GPTConfig(n_layers=LAYERS, n_heads=HEADS, width=WIDTH), task, [seed])  # N + 1 positions
    steps = {"icldyn": adam_step(ours, lambda: ours.loss(ours(data), data).sum())}
    if with_reference and transformers_version() is not None:
        for attention in ("sdpa", "eager"):
            ref = GargTransformer(D, N_POINTS + 1, WIDTH, LAYERS, HEADS, attention)
            steps[f"gpt2_{attention}"] = adam_step(ref, lambda ref=ref: 0.5 * (ref(x, y) - y).pow(2).mean())
    return steps


def gpt_vs_gpt2(quick: bool = False) -> dict:
    """4-layer/4-head/width-128 GPT (interleaved tokens, d = 10, N = 40, Adam) at batch 64, 256 and
    1024 vs Garg et al.'s GPT2Model with read-in/out (sdpa and eager attention), side by side."""
    version = transformers_version()
    out = {"layers": LAYERS, "heads": HEADS, "width": WIDTH, "transformers": version}
    if version is None:
        out["note"] = ("skipped the reference: transformers is not installed "
                       "(pip install -c constraints.txt -e '.[bench]')")
    peak = peak_gflops()
    for batch in ((64,) if quick else (64, 256, 1024)):
        load = load_average()
        steps = gpt_steps(batch)
        repeats = 1 if quick else (5 if batch <= 64 else 4 if batch <= 256 else 3)
        t = interleaved(steps, repeats, warmup=1)
        flops = gpt_flops(batch, N_POINTS, D, LAYERS, WIDTH)
        row: dict = {"load_avg": load}
        for name, secs in t.items():
            row[name] = throughput(secs, batch, flops, peak)
        if "gpt2_sdpa" in t:
            row["ratio_vs_gpt2"] = t["gpt2_sdpa"] / t["icldyn"]
            row["ratio_vs_gpt2_eager"] = t["gpt2_eager"] / t["icldyn"]
        out[f"batch_{batch}"] = row
    return out


def adam_variants(quick: bool = False) -> dict:
    """torch.optim.Adam's for-loop (the trainer's, torch's CPU default), foreach and fused
    implementations on the 4-layer GPT's parameters: ms per optimizer step, and the for-loop's
    share of a whole batch-64 training step."""
    from icldyn.bench.core import best_of
    from icldyn.models.gpt import GPT, GPTConfig
    from icldyn.tasks.linear_regression import LinearRegressionConfig

    model = GPT(GPTConfig(n_layers=LAYERS, n_heads=HEADS, width=WIDTH), LinearRegressionConfig(d=D, n_points=N_POINTS),
                [0])
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    out = {"parameters": sum(p.numel() for p in model.parameters()), "tensors": len(list(model.parameters())),
           "load_avg": load_average()}
    for name, kw in (("for_loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        opt = torch.optim.Adam(model.parameters(), lr=1e-6, **kw)
        out[f"{name}_ms"] = best_of(opt.step, 5 if quick else 50) * 1e3
    step = gpt_steps(64, with_reference=False)["icldyn"]
    out["for_loop_share_of_batch_64_step"] = out["for_loop_ms"] / 1e3 / best_of(step, 2 if quick else 5)
    return out


def linreg_gpt_step(quick: bool = False) -> dict:
    """The linreg-gpt quick preset's training step (the trainer's own, sampling included) with
    torch's for-loop Adam and the fused one (`train.fused_optimizer`, the preset's), taking turns
    at one thread (as `icldyn run` trains): ms per step in wall and in this process's CPU time,
    and the preset's training steps at each."""
    from icldyn.bench.lsa import stepper
    from icldyn.experiments import EXPERIMENTS
    from icldyn.train.trainer import Trainer

    exp = EXPERIMENTS["linreg-gpt"]

    def trainer(fused: bool):
        cfg = exp.config("quick", {"train.fused_optimizer": fused})
        task = exp.build_task(cfg)
        return Trainer(cfg, task, exp.build_model(cfg, task, [cfg.seed])), cfg.train.steps

    (loop, steps), (fused, _) = trainer(False), trainer(True)
    inner = 5 if quick else 20
    fns = {"for_loop": stepper(loop, inner), "fused": stepper(fused, inner)}
    repeats = 2 if quick else 7
    out: dict = {"load_avg": load_average(), "preset_steps": steps, "threads": 1}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as `icldyn run` trains (its --threads default)
    try:
        for clock, label in ((time.perf_counter, "wall"), (time.process_time, "cpu")):
            t = interleaved(fns, repeats, warmup=1, clock=clock)
            out[f"for_loop_ms_{label}"] = t["for_loop"] / inner * 1e3
            out[f"fused_ms_{label}"] = t["fused"] / inner * 1e3
            out[f"step_speedup_{label}"] = t["for_loop"] / t["fused"]
    finally:
        torch.set_num_threads(threads)
    out["preset_training_s_cpu_for_loop"] = steps * out["for_loop_ms_cpu"] / 1e3
    out["preset_training_s_cpu_fused"] = steps * out["fused_ms_cpu"] / 1e3
    return out
