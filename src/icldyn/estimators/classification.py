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

SOLVER_STEPS = 150   # FISTA iterations on the SVM dual (agreement with scikit-learn: tests)
NEWTON_STEPS = 30


class ContextClassifier(Estimator):
    """Base: `fit_score(x (P, n, d), y (P, n), query (P, d)) -> (P,)` per chunk of prompts."""

    chunk_elements = 2**22

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


class Logistic(ContextClassifier):
    """L2 logistic regression (C/2·‖w‖² ⇔ sklearn's C): Newton on [w; b], b unpenalised."""

    def fit_score(self, x, y, query):
        P, n, d = x.shape
        xt = torch.cat([x, torch.ones(P, n, 1, dtype=x.dtype)], -1)              # (P, n, d+1)
        reg = torch.ones(d + 1, dtype=x.dtype)
        reg[-1] = 1e-10                                                            # the intercept
        theta = torch.zeros(P, d + 1, dtype=x.dtype)
        for _ in range(NEWTON_STEPS):
            margin = y * torch.einsum("pnk,pk->pn", xt, theta)
            s = torch.sigmoid(-margin)                                             # (P, n)
            grad = -self.C * torch.einsum("pn,pnk->pk", y * s, xt) + reg * theta
            weight = self.C * s * (1 - s)
            hess = torch.bmm((xt * weight[..., None]).transpose(1, 2), xt) + torch.diag(reg)
            theta = theta - torch.linalg.solve(hess, grad)
        return torch.einsum("pk,pk->p", theta[:, :d], query) + theta[:, d]


class KernelSVM(ContextClassifier):
    """max Σα − ½ αᵀQα, 0 ≤ α ≤ C, Q = yyᵀ ∘ (K + 1): FISTA with step 1/λ_max(Q)."""

    kernel_kind = "linear"

    def kernel(self, a, b, gamma):
        if self.kernel_kind == "linear":
            return torch.einsum("pid,pjd->pij", a, b)
        return torch.exp(-gamma[:, None, None] * torch.cdist(a, b).pow(2))

    def fit_score(self, x, y, query):
        P, n, d = x.shape
        gamma = 1.0 / (d * x.reshape(P, -1).var(-1, unbiased=False).clamp(min=1e-12))
        Q = y[:, :, None] * y[:, None, :] * (self.kernel(x, x, gamma) + 1)
        step = 1.0 / torch.linalg.eigvalsh(Q)[:, -1].clamp(min=1e-12)           # (P,)
        alpha = torch.zeros(P, n, dtype=x.dtype)
        z, t = alpha, 1.0
        for _ in range(SOLVER_STEPS):
            grad = 1 - torch.einsum("pij,pj->pi", Q, z)
            new = (z + step[:, None] * grad).clamp(0, self.C)
            t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
            z, alpha, t = new + (t - 1) / t_next * (new - alpha), new, t_next
        kq = self.kernel(x, query[:, None], gamma)[..., 0] + 1                     # (P, n)
        return (alpha * y * kq).sum(-1)


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
