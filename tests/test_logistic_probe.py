"""`eval.linear.solver: lbfgs`: RRKD's probe, scikit-learn's LogisticRegression(C, max_iter) fitted on the
frozen features (rrkd.ipynb quick_sk_probe), scored on the test split; the SGD probe's configs unchanged."""
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from orchestrator.spec.schema import LinearProbe
from trainables.datasets import load_dataset
from trainables.evaluate import evaluate, extract, logistic_regression
from trainables.models import build_model


@pytest.fixture(scope="module")
def digits_features():
    """An untrained MLP's features of scikit-learn's real digits: a probe has something to separate."""
    data = load_dataset("digits", "unused")
    torch.manual_seed(0)
    model = build_model("mlp", 10, 1, 8, hidden=[32])
    train_f, _ = extract(model, data, "train")
    test_f, _ = extract(model, data, "test")
    return model, data, train_f, test_f


def test_the_probe_is_sklearns_logistic_regression_on_the_raw_features(digits_features):
    _, data, train_f, test_f = digits_features
    top1, top5 = logistic_regression(train_f, data.train_y, test_f, data.test_y, C=1.0, max_iter=5000, seed=3)
    theirs = LogisticRegression(C=1.0, max_iter=5000, random_state=3).fit(train_f.double().numpy(), data.train_y.numpy())
    assert top1 == pytest.approx(100 * theirs.score(test_f.double().numpy(), data.test_y.numpy()), abs=1e-9)
    assert 50 < top1 <= top5 <= 100  # far above chance (10%)
    weaker, _ = logistic_regression(train_f, data.train_y, test_f, data.test_y, C=1e-4, max_iter=5000, seed=3)
    assert weaker < top1  # C is the inverse L2 strength, as sklearn's


def test_evaluate_logs_the_lbfgs_probe_as_the_linear_protocol(digits_features):
    model, data, train_f, test_f = digits_features
    probe = LinearProbe(solver="lbfgs", C=0.5, max_iter=200).model_dump()
    out = evaluate(model, data, {"linear": probe}, seed=1)
    top1, top5 = logistic_regression(train_f, data.train_y, test_f, data.test_y, C=0.5, max_iter=200, seed=1)
    assert out == {"eval/linear_top1": top1, "eval/linear_top1_best": top1, "eval/linear_top5": top5}


def test_the_sgd_probes_config_and_so_its_runs_hashes_are_unchanged():
    assert sorted(LinearProbe().model_dump()) == ["batch_size", "epochs", "gamma", "lr", "milestones", "momentum",
                                                 "weight_decay"]
    assert LinearProbe(solver="lbfgs").model_dump()["solver"] == "lbfgs"
    with pytest.raises(ValueError, match="augment: true trains on fresh views"):
        LinearProbe(solver="lbfgs", augment=True)
