"""The batched per-prompt learners against scikit-learn fitted prompt by prompt on the same prompts."""

import numpy as np
import pytest
import torch

from icldyn.estimators import make_estimator
from icldyn.tasks import build_task
from icldyn.tasks.binary_classification import BinaryClassificationConfig

sklearn = pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402
from sklearn.svm import SVC, LinearSVC  # noqa: E402

N_PROMPTS = 300


def reference(name):
    return {"logistic": lambda: LogisticRegression(C=1.0, tol=1e-10, max_iter=1000),
            "linear_svm": lambda: LinearSVC(loss="hinge", C=1.0, tol=1e-8, max_iter=100_000),
            "rbf_svm": lambda: SVC(kernel="rbf", C=1.0, gamma="scale"),
            "nn_1": lambda: KNeighborsClassifier(1), "nn_3": lambda: KNeighborsClassifier(3)}[name]()


@pytest.fixture(scope="module")
def prompts():
    task = build_task(BinaryClassificationConfig(alpha=0.6), torch.float64)
    return task, task.sample([3], 0, N_PROMPTS, stream="eval")


def sklearn_predictions(name, batch):
    x, y = batch.x[0].numpy(), batch.y[0].numpy()
    out = []
    for p in range(x.shape[0]):
        ctx, yc = x[p, :-1], y[p, :-1]
        if len(set(yc)) == 1:
            out.append(yc[0])
            continue
        out.append(reference(name).fit(ctx, yc).predict(x[p, -1:])[0])
    return np.array(out)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", ["logistic", "linear_svm", "rbf_svm", "nn_1", "nn_3"])
def test_learner_agrees_with_sklearn(prompts, name):
    task, batch = prompts
    ours = np.sign(make_estimator(name, task)(batch)[0].numpy())
    ref = sklearn_predictions(name, batch)
    truth = batch.y[0, :, -1].numpy()
    err_ours, err_ref = np.mean(ours != truth), np.mean(ref != truth)
    assert abs(err_ours - err_ref) <= 0.01 + 1e-12, (err_ours, err_ref)
    agreement = np.mean(ours == ref)
    assert agreement >= (0.99 if name != "rbf_svm" else 0.95), agreement


def test_logistic_matches_sklearn_coefficients_on_one_prompt(prompts):
    """The decision value itself (not only its sign) for a prompt with both classes."""
    task, batch = prompts
    p = next(i for i in range(N_PROMPTS) if len(set(batch.y[0, i, :-1].tolist())) == 2)
    one = batch.select(slice(p, p + 1))
    ref = reference("logistic").fit(one.x[0, 0, :-1].numpy(), one.y[0, 0, :-1].numpy())
    expected = ref.decision_function(one.x[0, 0, -1:].numpy())[0]
    assert float(make_estimator("logistic", task)(one)[0, 0]) == pytest.approx(expected, abs=1e-5)
