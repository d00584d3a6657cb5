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

from contextlib import contextmanager

import torch

from icldyn.estimators.base import Estimator

FLOAT32_STEPS = 10     # Newton steps in float32, at most (most prompts converge within 6)
POLISH_MARGIN = 1e-3   # query scores this close to 0 after float32 are refined in float64
NEWTON_STEPS = 30      # at most; stops once every prompt's Newton step is below NEWTON_TOL
NEWTON_TOL = 1e-4      # margin change of a step; the error left is ≈ ½·step² (quadratic convergence)
SOLVER_STEPS = 3000    # FISTA steps on the SVM dual, at most (most prompts stop within 40)
FLOAT32_FISTA = 60     # FISTA steps in float32 (certified with a rounding bound) before float64 ones
FIRST_CHECK = 12       # the first duality-gap check (few prompts are certified earlier)
CHECK_EVERY = 2        # steps between duality-gap checks
SHRINK_SHARE = 0.25    # shrink the batch once this share of it is certified
GAP_TOL = 1e-10


@contextmanager
def one_intra_op_thread():
    """Run the block with one torch intra-op thread, restoring the count after. The solvers issue
    hundreds of small ops ((P, n, n) with n ≈ 20); split over threads each pays a hand-off, and on
    a shared 2-core machine (load 15–20) the five learners took 3–10 s each at 2 threads against
    0.4–0.9 s at one (10⁴ prompts, l = 20; `python -m icldyn.bench.classifiers`)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class ContextClassifier(Estimator):
    """Base: `fit_score(x (P, n, d), y (P, n), query (P, d)) -> (P,)` per chunk of prompts."""

    chunk_elements = 2**24

    def __init__(self, task, C: float = 1.0):
        super().__init__(task)
        self.C = C

    def __call__(self, batch) -> torch.Tensor:
        with one_intra_op_thread():
            return self._call(batch)

    def _call(self, batch) -> torch.Tensor:
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
    (`_newton_step`), first in float32, a prompt leaving the batch once its step moves no context
    margin and not its query score by more than NEWTON_TOL (quadratic convergence: its error is
    then at float32's rounding, ~1e-6). Prompts whose query score is then within POLISH_MARGIN of
    0, or that did not converge in FLOAT32_STEPS, continue in float64 to NEWTON_TOL, so every
    sign is the exact solution's."""

    def fit_score(self, x, y, query):
        P, n, d = x.shape
        x32 = x.float()
        K32, kq32 = torch.bmm(x32, x32.transpose(1, 2)), torch.einsum("pnd,pd->pn", x32, query.float())
        c, b = torch.zeros(P, n, dtype=torch.float32), torch.zeros(P, dtype=torch.float32)
        left = _newton(K32, y.float(), kq32, c, b, self.C, FLOAT32_STEPS)
        scores = ((kq32 * c).sum(-1) + b).double()
        redo = torch.unique(torch.cat([left, torch.nonzero(scores.abs() < POLISH_MARGIN)[:, 0]]))
        if redo.numel():                            # the quadratic phase in double precision
            xr, qr = x[redo], query[redo]
            K, kq = torch.bmm(xr, xr.transpose(1, 2)), torch.einsum("pnd,pd->pn", xr, qr)
            cr, br = c[redo].double(), b[redo].double()
            _newton(K, y[redo], kq, cr, br, self.C, NEWTON_STEPS)
            scores[redo] = (kq * cr).sum(-1) + br
        return scores


def _newton(K, y, kq, c, b, C, steps):
    """Newton steps on every prompt, in place on c (P, n) and b (P,), each prompt until its step
    moves no margin (context or query) by more than NEWTON_TOL; returns the prompts left running."""
    live = torch.arange(K.shape[0])
    for _ in range(steps):
        k = K[live] if live.numel() < K.shape[0] else K
        dc, db = _newton_step(k, y[live], c[live], b[live], C)
        c[live], b[live] = c[live] - dc, b[live] - db
        moved = torch.cat([torch.bmm(k, dc[..., None])[..., 0], (kq[live] * dc).sum(-1, keepdim=True)], -1)
        live = live[(moved + db[:, None]).abs().amax(-1) > NEWTON_TOL]
        if live.numel() == 0:
            break
    return live


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

    def gram(self, x, y, query):
        """Q = yyᵀ ∘ (K + 1) (P, n, n), yk = y ∘ (k(x, q) + 1) (P, n), kqq = k(q, q) + 1 (P,), in x's dtype."""
        P, n, d = x.shape
        gamma = None
        if self.kernel_kind == "rbf":
            flat = x.reshape(P, -1)
            var = (flat * flat).mean(-1) - flat.mean(-1) ** 2                      # Var(X), as numpy's
            gamma = 1.0 / (d * var.clamp(min=1e-12))
        Q = (self.kernel(x, x, gamma) + 1).mul_(y[:, :, None] * y[:, None, :])
        kq = self.kernel(x, query[:, None], gamma)[..., 0] + 1
        kqq = self.kernel(query[:, None], query[:, None], gamma)[:, 0, 0] + 1
        return Q, y * kq, kqq

    def fit_score(self, x, y, query):
        """The float32 phase gets its Gram matrices in float32; the prompts it leaves uncertified
        get theirs recomputed in float64 (`exact`)."""
        return _certified_fista(self.gram(x.float(), y.float(), query.float()),
                                lambda live: self.gram(x[live], y[live], query[live]), self.C)


def _fista_step(q, step, a, qa, z, qz, t, C):
    """One FISTA step on ½αᵀqα − Σα over [0, C]ⁿ: q (P, n, n), step (P,), iterate a and qa = q·a,
    extrapolation z and qz = q·z (P, n), momentum t (P,) → (a, qa, z, qz, t). One batched
    matrix-vector product per step: q·z follows from q·a by linearity (z is a combination of iterates)."""
    new = (z + step[:, None] * (1 - qz)).clamp(0, C)
    q_new = torch.bmm(q, new[..., None])[..., 0]
    t_next = (1 + (1 + 4 * t * t).sqrt()) / 2
    beta = ((t - 1) / t_next)[:, None]
    return new, q_new, new + beta * (new - a), q_new + beta * (q_new - qa), t_next


def _certified_fista(gram32, exact, C):
    """Query scores Σ αᵢyᵢ(k(xᵢ, q) + 1) of the box-constrained dual, stopped prompt by prompt
    once the sign is certified.

    gram32 = (Q (P, n, n), yk (P, n) = y ∘ (k(x, q) + 1), kqq (P,) = k(q, q) + 1) in float32, and
    exact(live) the same three of the prompts `live` in float64 → scores (P,) float64.
    FISTA with step 1/‖Q⁴‖_F^{1/4} (≥ λ_max, within a factor n^{1/8} of it). For any feasible α the duality gap
    G = αᵀQα − Σα + C Σ max(0, 1 − (Qα)ᵢ) bounds the primal suboptimality of w(α) = Σ αᵢyᵢφ(xᵢ),
    so ‖w − w*‖ ≤ √(2G) (the primal is 1-strongly convex) and |f(q) − f*(q)| ≤ √(2G·kqq).
    A prompt stops when that bound is below |f(q)| (its sign is the exact solution's), or when
    G < GAP_TOL (checks every CHECK_EVERY steps from FIRST_CHECK on; see `_fista_phase`). The first FLOAT32_FISTA steps run in single precision (the iterates
    are clamped, so feasible, in any precision); their certificates add a bound on float32's
    rounding of G and f(q) (`_rounding_slack`), so a sign certified there is still exact.
    Prompts left after them continue in double precision.
    """
    Q, yk, kqq = gram32
    P, n, _ = Q.shape
    Q2 = torch.bmm(Q, Q)                            # the step bound, shortened by float32's rounding
    step = (1 - 1e-3) / torch.bmm(Q2, Q2).flatten(1).norm(dim=-1).clamp(min=1e-30) ** 0.25  # (P,)
    scores = torch.zeros(P, dtype=torch.float64)
    zeros = torch.zeros(P, n, dtype=torch.float32)
    state = (torch.arange(P), Q, yk, kqq, step, zeros, zeros, zeros, zeros, torch.ones(P, dtype=torch.float32))
    state = _fista_phase(state, scores, C, 1, FLOAT32_FISTA, exact=False)
    live, *rest = state
    if live.numel():                                # the rest in double precision, from where it stopped
        a, z, t, step = (v.double() for v in (rest[-5], rest[-3], rest[-1], rest[3]))
        q, yk, kqq = exact(live)
        qa, qz = (torch.bmm(q, v[..., None])[..., 0] for v in (a, z))
        state = (live, q, yk, kqq, step, a, qa, z, qz, t)
        _fista_phase(state, scores, C, FLOAT32_FISTA + 1, SOLVER_STEPS, exact=True)
    return scores


def _rounding_slack(a, qa, yk, C):
    """A bound on float32's rounding of the gap and of the score (P,), (P,): each sum of n
    products is within n·ε·Σ|terms| (ε = 2⁻²⁴, and Q itself rounded), times a safety factor 8."""
    n, eps = a.shape[-1], 2.0 ** -24
    scale = 8 * (n + 2) * eps
    gap_terms = (a * qa.abs()).sum(-1) + a.sum(-1) + C * (1 + qa.abs()).sum(-1)
    return scale * gap_terms, scale * (a * yk.abs()).sum(-1)


def _fista_phase(state, scores, C, first, last, exact):
    """FISTA steps first..last on the prompts of `state` = (live, Q, yk, kqq, step, a, qa, z, qz, t),
    writing each certified prompt's score into scores[live] once; returns the state of those left.
    The gap check is elementwise (q·a comes with the step); the batch shrinks to the uncertified
    prompts once SHRINK_SHARE of it is certified (shrinking copies q: as costly as a step)."""
    live, *v = state
    finished = torch.zeros(live.shape[0], dtype=torch.bool)
    for k in range(first, last + 1):
        v[4:] = _fista_step(v[0], v[3], *v[4:], C)
        if (k < FIRST_CHECK or (k - FIRST_CHECK) % CHECK_EVERY) and k < last:
            continue
        yk, kqq, a, qa = v[1], v[2], v[4], v[5]
        gap = (a * qa).sum(-1) - a.sum(-1) + C * (1 - qa).clamp(min=0).sum(-1)
        score = (a * yk).sum(-1)
        if exact:
            done = ((2 * gap.clamp(min=0) * kqq).sqrt() < score.abs()) | (gap < GAP_TOL)
        else:
            gap_err, score_err = _rounding_slack(a, qa, yk, C)
            done = (2 * (gap.clamp(min=0) + gap_err) * kqq).sqrt() + score_err < score.abs()
        if exact and k == last:
            done = torch.ones_like(done)            # the step budget is spent: the last iterate
        new = done & ~finished
        scores[live[new]] = score[new].to(scores.dtype)
        finished |= done
        if k < last and finished.sum() < SHRINK_SHARE * live.shape[0]:
            continue
        keep = ~finished
        live, finished, v = live[keep], finished[keep], [u[keep] for u in v]
        if live.numel() == 0:
            break
    return (live, *v)


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
