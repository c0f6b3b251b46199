"""The protocols that score a student: its own classifier, a linear probe and k-NN on frozen features."""
from __future__ import annotations

from typing import Callable

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from .datasets import ImageData
from .models import Backbone


@torch.no_grad()
def extract(model: Backbone, data, split: str, batch_size: int = 512
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pooled features (and logits, when the model has a head) of a split under the evaluation view."""
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    feats, logits = [], []
    for x in data.eval_loader(split, batch_size):
        out = model(x.to(device, non_blocking=True))
        feats.append(out.feature.float())
        if out.logits is not None:
            logits.append(out.logits.float())
    model.train(was_training)
    return torch.cat(feats), (torch.cat(logits) if logits else None)


@torch.no_grad()
def extract_augmented(model: Backbone, data, seed: int, batch_size: int = 512) -> torch.Tensor:
    """Pooled features of the training images in order, each freshly RandomResizedCrop'd + flipped
    (`data.probe_loader`), the model in eval mode (frozen BatchNorm statistics, as MoCo's main_lincls.py)."""
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    feats = [model(x.to(device, non_blocking=True)).feature.float() for x in data.probe_loader(batch_size, seed)]
    model.train(was_training)
    return torch.cat(feats)


def probe_seed(seed: int, epoch: int) -> int:
    """The augmentation seed of a probe epoch: a function of the trial's seed and the epoch alone."""
    return seed * 1_000_003 + 500_009 + epoch


def top1(logits: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * (logits.argmax(1) == y).float().mean().item()


def top5(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Percent of rows whose label is among the 5 highest logits (all of them with fewer classes)."""
    k = min(5, logits.shape[1])
    return 100.0 * (logits.topk(k, dim=1).indices == y[:, None]).any(1).float().mean().item()


def knn_top1(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor,
             num_classes: int, k: int = 10, temperature: float = 0.07) -> float:
    """Cosine k-NN: exact inner product on L2-normalised features (faiss), votes weighted exp(sim/T)."""
    tr = np.ascontiguousarray(F.normalize(train_f, dim=1).cpu().numpy(), dtype=np.float32)
    te = np.ascontiguousarray(F.normalize(test_f, dim=1).cpu().numpy(), dtype=np.float32)
    k = min(k, len(tr))
    sims, idx = faiss.knn(te, tr, k, metric=faiss.METRIC_INNER_PRODUCT)
    votes = torch.zeros(len(te), num_classes, dtype=torch.float64)
    weights = torch.exp(torch.from_numpy(sims).double() / temperature)
    votes.scatter_add_(1, train_y.cpu()[torch.from_numpy(idx)], weights)
    return 100.0 * (votes.argmax(1) == test_y.cpu()).float().mean().item()


def linear_probe(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor,
                 num_classes: int, epochs: int, batch_size: int, lr: float, momentum: float,
                 weight_decay: float, milestones: list[int], gamma: float, seed: int,
                 train_views: Callable[[int], torch.Tensor] | None = None) -> tuple[float, float, float]:
    """A new linear head on frozen features; returns the test top-1 of the last and of the best epoch,
    and the last epoch's top-5 (CoSS's ImageNet table gives linear top-5). `train_views(epoch)`, when
    given, returns the training features of that epoch (0-based; the rows in `train_y`'s order) in place
    of `train_f`: an augmented probe's fresh views."""
    gen = torch.Generator(device=train_f.device).manual_seed(seed)
    torch.manual_seed(seed)
    head = torch.nn.Linear(train_f.shape[1], num_classes).to(train_f.device)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma)
    best = last = 0.0
    for epoch in range(epochs):
        feats = train_f if train_views is None else train_views(epoch).to(train_f.device)
        order = torch.randperm(len(feats), generator=gen, device=train_f.device)
        for i in range(0, len(order), batch_size):
            b = order[i:i + batch_size]
            loss = F.cross_entropy(head(feats[b]), train_y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        with torch.no_grad():
            logits = head(test_f)
            last = top1(logits, test_y)
        best = max(best, last)
    return last, best, top5(logits, test_y) if epochs else 0.0


def logistic_regression(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor,
                        C: float, max_iter: int, seed: int) -> tuple[float, float]:
    """scikit-learn's LogisticRegression (lbfgs, multinomial, L2 with inverse strength C) fitted on the
    raw features, as RRKD's notebook does (quick_sk_probe: no scaling, random_state the seed); test top-1
    and top-5 (%)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x, y = train_f.detach().cpu().double().numpy(), train_y.cpu().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is the protocol's, as theirs
        fitted = LogisticRegression(C=C, max_iter=max_iter, random_state=seed).fit(x, y)
    scores = torch.from_numpy(fitted.decision_function(test_f.detach().cpu().double().numpy()))
    if scores.ndim == 1:  # two classes: one column of scores for the second
        scores = torch.stack([-scores, scores], 1)
    order = torch.from_numpy(fitted.classes_)[scores.topk(min(5, scores.shape[1]), 1).indices]
    y_test = test_y.cpu()
    top1 = 100.0 * (order[:, 0] == y_test).double().mean().item()
    top5 = 100.0 * (order == y_test[:, None]).any(1).double().mean().item()
    return top1, top5


CURVE_BANK, CURVE_QUERIES = 5000, 1000


def knn_curve_point(model: Backbone, data, k: int, temperature: float) -> float:
    """k-NN top-1 of a fixed, stratified slice of the evaluation split (at most CURVE_QUERIES images)
    against a slice of the training set (at most CURVE_BANK): cheap enough to score every few epochs,
    so a student without a classifier has an accuracy curve (`curve/knn_top1`). The same slices every
    time; the final `eval/knn_top1` still uses every image."""
    part = data
    for split, cap in (("train", CURVE_BANK), ("test", CURVE_QUERIES)):
        n = len(part.labels(split))
        if n > cap:
            part = part.subset(cap / n, 0, split)
    train_f, _ = extract(model, part, "train")
    test_f, _ = extract(model, part, "test")
    return knn_top1(train_f, part.labels("train").to(train_f.device), test_f, part.labels("test").to(test_f.device),
                    data.num_classes, k, temperature)


def classifier_top1(model: Backbone, data: ImageData) -> float:
    _, logits = extract(model, data, "test")
    return top1(logits, data.test_y.to(logits.device))


def evaluate(model: Backbone, data: ImageData, protocols: dict, seed: int) -> dict[str, float]:
    """Run the asked protocols on the final model; keys are `eval/<protocol>_top1` (the last epoch),
    `eval/linear_top1_best` (the probe's best epoch) and `eval/linear_top5`. A probe with `augment: true`
    trains on the features of freshly augmented training images every epoch (`extract_augmented`)."""
    out: dict[str, float] = {}
    test_f, test_logits = extract(model, data, "test")
    if "classifier" in protocols and test_logits is not None:
        out["eval/classifier_top1"] = top1(test_logits, data.test_y.to(test_logits.device))
    if "linear" in protocols or "knn" in protocols:
        probe = dict(protocols.get("linear") or {})
        augmented = bool(probe.pop("augment", False))
        train_f = None
        if "knn" in protocols or not augmented:
            train_f, _ = extract(model, data, "train")
        if "knn" in protocols:
            p = protocols["knn"]
            out["eval/knn_top1"] = knn_top1(train_f, data.train_y, test_f, data.test_y, data.num_classes,
                                            p["k"], p["temperature"])
        if "linear" in protocols and probe.get("solver") == "lbfgs":
            lr_top1, lr_top5 = logistic_regression(train_f, data.train_y, test_f, data.test_y, probe["C"], probe["max_iter"],
                                               seed)
            out["eval/linear_top1"] = out["eval/linear_top1_best"] = lr_top1
            out["eval/linear_top5"] = lr_top5
        elif "linear" in protocols:
            views = None
            if augmented:
                first = {0: extract_augmented(model, data, probe_seed(seed, 0))}  # handed over, then dropped

                def views(epoch: int) -> torch.Tensor:
                    if epoch in first:
                        return first.pop(epoch)
                    return extract_augmented(model, data, probe_seed(seed, epoch))

                train_f = first[0] if train_f is None else train_f  # the feature size and device
            last, best, last5 = linear_probe(train_f, data.train_y.to(train_f.device), test_f,
                                             data.test_y.to(test_f.device), data.num_classes, seed=seed,
                                             train_views=views, **probe)
            out["eval/linear_top1"], out["eval/linear_top1_best"], out["eval/linear_top5"] = last, best, last5
    return out
