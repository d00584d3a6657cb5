"""Per-prompt binary classifiers fitted on each prompt's context, batched over prompts.

Each learner fits the n context pairs (x_i, y_i ∈ ±1) of every prompt at once and scores the
prompt's query; sign(score) is the predicted class. Regularisation follows scikit-learn's
defaults, so a test can check them against scikit-learn fitted prompt by prompt:
  logistic    L2 logistic regression, C = 1, unpenalised intercept (LogisticRegression()):
              batched Newton on the (d + 1)-dimensional primal
  linear_svm  hinge-loss linear SVM, C = 1, intercept regularised as a constant feature (liblinear's
              convention, LinearSVC(loss="hinge")): batched FISTA on the box-constrained dual
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

NEWTON_STEPS = 30      # at most; stops once every prompt's Newton step is below NEWTON_TOL
NEWTON_TOL = 1e-6      # step size; Newton converges quadratically, so the error left is ~ its square
SOLVER_STEPS = 3000    # FISTA steps on the SVM dual, at most (most prompts stop within 50)
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
        c, b = torch.zeros(P, n, dtype=x.dtype), torch.zeros(P, dtype=x.dtype)
        live = torch.arange(P)
        for _ in range(NEWTON_STEPS):
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
        if self.kernel_kind == "linear":
            return torch.einsum("pid,pjd->pij", a, b)
        return torch.exp(-gamma[:, None, None] * torch.cdist(a, b).pow(2))

    def fit_score(self, x, y, query):
        P, n, d = x.shape
        gamma = 1.0 / (d * x.reshape(P, -1).var(-1, unbiased=False).clamp(min=1e-12))
        Q = y[:, :, None] * y[:, None, :] * (self.kernel(x, x, gamma) + 1)        # (P, n, n)
        kq = self.kernel(x, query[:, None], gamma)[..., 0] + 1                     # (P, n)
        kqq = self.kernel(query[:, None], query[:, None], gamma)[:, 0, 0] + 1     # (P,)
        return _certified_fista(Q, y * kq, kqq, self.C)


def _certified_fista(Q, yk, kqq, C):
    """Query scores Σ αᵢyᵢ(k(xᵢ, q) + 1) of the box-constrained dual, stopped prompt by prompt
    once the sign is certified.

    Q (P, n, n), yk (P, n) = y ∘ (k(x, q) + 1), kqq (P,) = k(q, q) + 1 → scores (P,).
    FISTA with step 1/‖Q‖_F (≤ 1/λ_max). For any feasible α the duality gap
    G = αᵀQα − Σα + C Σ max(0, 1 − (Qα)ᵢ) bounds the primal suboptimality of w(α) = Σ αᵢyᵢφ(xᵢ),
    so ‖w − w*‖ ≤ √(2G) (the primal is 1-strongly convex) and |f(q) − f*(q)| ≤ √(2G·kqq).
    A prompt stops when that bound is below |f(q)| (its sign is the exact solution's), or when
    G < GAP_TOL; every CHECK_EVERY steps the batch shrinks to the prompts still running.
    """
    P, n, _ = Q.shape
    step = 1.0 / Q.flatten(1).norm(dim=-1).clamp(min=1e-12)                       # (P,)
    scores = torch.zeros(P, dtype=Q.dtype)
    live, q, a, z = torch.arange(P), Q, torch.zeros(P, n, dtype=Q.dtype), torch.zeros(P, n, dtype=Q.dtype)
    t = torch.ones(P, dtype=Q.dtype)
    for k in range(1, SOLVER_STEPS + 1):
        new = (z + step[:, None] * (1 - torch.bmm(q, z[..., None])[..., 0])).clamp(0, C)
        t_next = (1 + (1 + 4 * t * t).sqrt()) / 2
        z, a, t = new + ((t - 1) / t_next)[:, None] * (new - a), new, t_next
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
