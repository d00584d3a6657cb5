"""Per-prompt binary classifiers fitted on each prompt's context, batched over prompts.

Each learner fits the n context pairs (x_i, y_i ∈ ±1) of every prompt at once and scores the
prompt's query; sign(score) is the predicted class. Regularisation follows scikit-learn's
defaults, so a test can check them against scikit-learn fitted prompt by prompt:
  logistic    L2 logistic regression, C = 1, unpenalised intercept (LogisticRegression()):
              batched Newton in the n-dimensional span of the context (Woodbury), to convergence
  linear_svm  hinge-loss linear SVM, C = 1, intercept regularised as a constant feature (liblinear's
              convention, LinearSVC(loss="hinge")): batched FISTA on the box-constrained dual,
              stopped prompt by prompt once a duality-gap bound certifies the sign of the query's
              score (the sign is the exact solution's; the score's value is only as close as needed)
  rbf_svm     Gaussian-kernel SVM, C = 1, gamma = 'scale' = 1/(d·Var(X)): the same dual with the
              kernel K + 1 (intercept as a constant feature; SVC's unpenalised intercept differs
              from it on few prompts — the test bounds how many)
  nn_1, nn_3  k nearest neighbours (Euclidean), majority vote (KNeighborsClassifier(k))
A prompt whose context holds one class only is given that class (scikit-learn cannot fit it).

Layout: batch.x (..., n + 1, d), batch.y (..., n + 1) (the last point the query, its label
unused) → scores (...).
"""

from __future__ import annotations

import torch

from icldyn.estimators.base import Estimator

FLOAT32_STEPS = 4      # Newton steps in float32 before the float64 ones (the error is then ~1e-3)
NEWTON_STEPS = 30      # at most; stops once every prompt's Newton step is below NEWTON_TOL
NEWTON_TOL = 1e-4      # margin change of a step; the error left is ≈ ½·step² (quadratic convergence)
SOLVER_STEPS = 3000    # FISTA steps on the SVM dual, at most (most prompts stop within 50)
FLOAT32_FISTA = 20     # FISTA steps in float32 before the float64 ones (and the gap checks)
CHECK_EVERY = 10       # steps between duality-gap checks
GAP_TOL = 1e-10


class ContextClassifier(Estimator):
    """Base: `fit_score(x (P, n, d), y (P, n), query (P, d)) -> (P,)` per chunk of prompts."""

    chunk_elements = 2**24

    def __init__(self, task, C: float = 1.0):
        super().__init__(task)
        self.C = C

    def __call__(self, batch) -> torch.Tensor:
        x, y = batch.x.double(), batch.y.double()
        T, d = x.shape[-2:]
        lead = x.shape[:-2]
        x, y = x.reshape(-1, T, d), y.reshape(-1, T)
        step = max(1, self.chunk_elements // (T * (T + d)))
        out = torch.cat([self._scores(x[i:i + step], y[i:i + step]) for i in range(0, x.shape[0], step)])
        return out.reshape(lead)

    def _scores(self, x, y):
        ctx, yc, query = x[:, :-1], y[:, :-1], x[:, -1]
        scores = self.fit_score(ctx, yc, query)
        one_class = (yc == yc[:, :1]).all(-1)
        return torch.where(one_class, yc[:, 0], scores)

    def fit_score(self, x, y, query):
        raise NotImplementedError


def _newton_step(K, y, c, b, C):
    """One Newton step of ½‖w‖² + C Σ log(1 + e^{−y(xw + b)}), b unpenalised, with w = xᵀc.

    K = x xᵀ (P, n, n), y (P, n), c (P, n), b (P,) → (Δc (P, n), Δb (P,)). The gradient in w
    is xᵀ(c − C y∘s), in the row span of x, and so is the Newton step: all work is n×n.
    The Hessian [[I + xᵀWx, xᵀW1], [1ᵀWx, 1ᵀW1]] is inverted by Woodbury on the w-block,
    A⁻¹xᵀv = xᵀ(v − S(I + SKS)⁻¹SKv) with S = √W, and a Schur complement on b.
    """
    s = torch.sigmoid(-y * (torch.bmm(K, c[..., None])[..., 0] + b[:, None]))     # (P, n)
    gc, gb = c - C * y * s, -C * (y * s).sum(-1)                                   # (P, n), (P,)
    W = C * s * (1 - s)
    r = W.sqrt()
    L = torch.linalg.cholesky(r[:, :, None] * K * r[:, None, :] + torch.eye(K.shape[-1], dtype=K.dtype))
    V = torch.stack([gc, W], -1)                                                   # (P, n, 2)
    ainv = V - r[..., None] * torch.cholesky_solve(r[..., None] * torch.bmm(K, V), L)
    wka = (W[..., None] * torch.bmm(K, ainv)).sum(1)                               # (P, 2): uᵀA⁻¹gw, uᵀA⁻¹u
    db = (gb - wka[:, 0]) / (W.sum(-1) - wka[:, 1]).clamp(min=1e-300)
    return ainv[..., 0] - ainv[..., 1] * db[:, None], db


class Logistic(ContextClassifier):
    """L2 logistic regression (½‖w‖² + C·log-loss ⇔ sklearn's C), b unpenalised: batched Newton
    (`_newton_step`); a prompt leaves the batch once its step moves no context margin and not
    its query score by more than NEWTON_TOL."""

    def fit_score(self, x, y, query):
        P, n, d = x.shape
        K = torch.bmm(x, x.transpose(1, 2))                                        # (P, n, n)
        kq = torch.einsum("pnd,pd->pn", x, query)                                  # (P, n)
        c, b = torch.zeros(P, n, dtype=torch.float32), torch.zeros(P, dtype=torch.float32)
        K32, y32 = K.float(), y.float()
        for _ in range(FLOAT32_STEPS):              # the global phase in single precision: cheaper
            dc, db = _newton_step(K32, y32, c, b, self.C)
            c, b = c - dc, b - db
        c, b = c.double(), b.double()
        live = torch.arange(P)
        for _ in range(NEWTON_STEPS):               # the quadratic phase in double precision
            k = K[live]
            dc, db = _newton_step(k, y[live], c[live], b[live], self.C)
            c[live], b[live] = c[live] - dc, b[live] - db
            moved = torch.cat([torch.bmm(k, dc[..., None])[..., 0], (kq[live] * dc).sum(-1, keepdim=True)], -1)
            live = live[(moved + db[:, None]).abs().amax(-1) > NEWTON_TOL]
            if live.numel() == 0:
                break
        return (kq * c).sum(-1) + b


class KernelSVM(ContextClassifier):
    """max Σα − ½ αᵀQα, 0 ≤ α ≤ C, Q = yyᵀ ∘ (K + 1): batched FISTA (`_certified_fista`)."""

    kernel_kind = "linear"

    def kernel(self, a, b, gamma):
        """k(a_i, b_j) (P, i, j) for a (P, i, d), b (P, j, d); gamma (P,) for the RBF kernel."""
        if self.kernel_kind == "linear":
            return torch.bmm(a, b.transpose(1, 2))
        norms = (a * a).sum(-1)[:, :, None] + (b * b).sum(-1)[:, None, :]
        sq = torch.baddbmm(norms, a, b.transpose(1, 2), alpha=-2)                  # ‖a_i − b_j‖²
        return sq.clamp_(min=0).mul_(-gamma[:, None, None]).exp_()

    def fit_score(self, x, y, query):
        P, n, d = x.shape
        flat = x.reshape(P, -1)
        var = (flat * flat).mean(-1) - flat.mean(-1) ** 2                          # Var(X), as numpy's
        gamma = 1.0 / (d * var.clamp(min=1e-12))
        Q = y[:, :, None] * y[:, None, :] * (self.kernel(x, x, gamma) + 1)        # (P, n, n)
        kq = self.kernel(x, query[:, None], gamma)[..., 0] + 1                     # (P, n)
        kqq = self.kernel(query[:, None], query[:, None], gamma)[:, 0, 0] + 1     # (P,)
        return _certified_fista(Q, y * kq, kqq, self.C)


def _fista_step(q, step, a, z, t, C):
    """One FISTA step on ½αᵀqα − Σα over [0, C]ⁿ: q (P, n, n), step (P,), iterate a, extrapolation z
    (P, n), momentum t (P,) → (a, z, t)."""
    new = (z + step[:, None] * (1 - torch.bmm(q, z[..., None])[..., 0])).clamp(0, C)
    t_next = (1 + (1 + 4 * t * t).sqrt()) / 2
    return new, new + ((t - 1) / t_next)[:, None] * (new - a), t_next


def _certified_fista(Q, yk, kqq, C):
    """Query scores Σ αᵢyᵢ(k(xᵢ, q) + 1) of the box-constrained dual, stopped prompt by prompt
    once the sign is certified.

    Q (P, n, n), yk (P, n) = y ∘ (k(x, q) + 1), kqq (P,) = k(q, q) + 1 → scores (P,).
    FISTA with step 1/‖Q⁴‖_F^{1/4} (≥ λ_max, within a factor n^{1/8} of it). For any feasible α the duality gap
    G = αᵀQα − Σα + C Σ max(0, 1 − (Qα)ᵢ) bounds the primal suboptimality of w(α) = Σ αᵢyᵢφ(xᵢ),
    so ‖w − w*‖ ≤ √(2G) (the primal is 1-strongly convex) and |f(q) − f*(q)| ≤ √(2G·kqq).
    A prompt stops when that bound is below |f(q)| (its sign is the exact solution's), or when
    G < GAP_TOL; every CHECK_EVERY steps the batch shrinks to the prompts still running.
    """
    P, n, _ = Q.shape
    Q2 = torch.bmm(Q, Q)
    step = 1.0 / torch.bmm(Q2, Q2).flatten(1).norm(dim=-1).clamp(min=1e-48) ** 0.25  # (P,)
    scores = torch.zeros(P, dtype=Q.dtype)
    a = z = torch.zeros(P, n, dtype=torch.float32)
    t = torch.ones(P, dtype=torch.float32)
    q32, s32 = Q.float(), step.float()
    for _ in range(FLOAT32_FISTA):                  # the first steps in single precision: cheaper
        a, z, t = _fista_step(q32, s32, a, z, t, C)
    live, q, a, z, t = torch.arange(P), Q, a.double(), z.double(), t.double()
    for k in range(FLOAT32_FISTA + 1, SOLVER_STEPS + 1):
        a, z, t = _fista_step(q, step, a, z, t, C)
        if k % CHECK_EVERY and k < SOLVER_STEPS:
            continue
        qa = torch.bmm(q, a[..., None])[..., 0]
        gap = (a * qa).sum(-1) - a.sum(-1) + C * (1 - qa).clamp(min=0).sum(-1)
        score = (a * yk).sum(-1)
        scores[live] = score
        keep = ((2 * gap.clamp(min=0) * kqq).sqrt() >= score.abs()) & (gap >= GAP_TOL)
        if not keep.any():
            break
        live, q, a, z, t, step, yk, kqq = (v[keep] for v in (live, q, a, z, t, step, yk, kqq))
    return scores


class LinearSVM(KernelSVM):
    kernel_kind = "linear"


class RBFSVM(KernelSVM):
    kernel_kind = "rbf"


class NearestNeighbours(ContextClassifier):
    """Majority label of the k context examples nearest the query (score = their mean label)."""

    def __init__(self, task, k: int = 1):
        super().__init__(task)
        self.k = k

    def fit_score(self, x, y, query):
        dist = torch.cdist(query[:, None], x)[:, 0]                                  # (P, n)
        idx = dist.topk(min(self.k, x.shape[1]), dim=-1, largest=False).indices
        return torch.gather(y, 1, idx).mean(-1)


CLASSIFIERS = {"logistic": (Logistic, {}), "linear_svm": (LinearSVM, {}), "rbf_svm": (RBFSVM, {}),
               "nn_1": (NearestNeighbours, {"k": 1}), "nn_3": (NearestNeighbours, {"k": 3})}
