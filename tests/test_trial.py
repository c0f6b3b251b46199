"""The trainable without Ray: resuming from an epoch checkpoint gives the uninterrupted result, and
the evaluation protocols agree with brute force."""
import copy

import pytest
import torch
import torch.nn.functional as F

from orchestrator.runner import preflight
from orchestrator.spec import load_sweep
from trainables.datasets import load_dataset
from trainables.evaluate import knn_top1
from trainables.trial import NonFiniteLoss, fit

from .conftest import SWEEPS, collect


@pytest.fixture(scope="module")
def plan():
    sweep = load_sweep(SWEEPS / "quickstart.yaml", ["train.epochs=4", "teacher_train.epochs=3",
                                                   "eval.linear.epochs=5", "eval.linear.milestones=[4]"])
    return preflight(sweep, "quickstart.yaml", str(SWEEPS))


def test_teacher_is_well_above_chance_and_student_resumes_exactly(plan):
    t, rep = collect()
    fit(plan.teachers[0], rep)
    assert [m["epoch"] for m in t["metrics"]] == [1, 2, 3]
    final = t["metrics"][-1]
    assert final["eval/classifier_top1"] > 80 and final["eval/linear_top1"] > 80 and final["eval/knn_top1"] > 80
    per_epoch = [m["eval/classifier_top1"] for m in t["metrics"]]  # scored every epoch: best and last kept
    assert final["eval/classifier_top1_best"] == max(per_epoch) and final["eval/classifier_top1"] == per_epoch[-1]

    cfg = plan.students[-3]  # coss, lambda 1.0
    assert cfg["method"] == "coss" and cfg["knobs"]["lambda"] == 1.0
    full, rep = collect()
    fit(cfg, rep, t["model"])
    assert [m["epoch"] for m in full["metrics"]] == [1, 2, 3, 4]
    assert all(m["train/loss"] == pytest.approx(m["train/co"] + m["train/ss"]) for m in full["metrics"])
    resumed, rep = collect()
    fit(cfg, rep, t["model"], resume=full["states"][1])  # killed after epoch 2
    assert [m["epoch"] for m in resumed["metrics"]] == [3, 4]
    for k, v in full["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    assert resumed["metrics"][-1]["eval/linear_top1"] == full["metrics"][-1]["eval/linear_top1"]


def test_teacher_receives_no_gradient_and_stays_in_eval_mode(plan, monkeypatch):
    import trainables.trial as trial

    seen = {}
    real = trial.load_teacher

    def spy(*a, **k):
        teacher = real(*a, **k)
        seen["teacher"] = teacher
        return teacher
    monkeypatch.setattr(trial, "load_teacher", spy)
    t, rep = collect()
    fit(plan.teachers[0], rep)
    before = {k: v.clone() for k, v in t["model"].items()}
    s, rep = collect()
    fit(plan.students[0], rep, t["model"])
    teacher = seen["teacher"]
    assert not teacher.training and all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v.cpu(), before[k]), k


def test_nan_loss_stops_the_trial_with_its_epoch(plan):
    cfg = copy.deepcopy(plan.students[0])
    cfg["train"]["lr"] = 1e30  # diverges at once
    t, rep = collect()
    fit(plan.teachers[0], rep)
    with pytest.raises(NonFiniteLoss, match="epoch 1"):
        fit(cfg, collect()[1], t["model"])


def test_knn_matches_brute_force():
    torch.manual_seed(0)
    tr, te = torch.randn(200, 16), torch.randn(50, 16)
    ytr, yte = torch.randint(0, 5, (200,)), torch.randint(0, 5, (50,))
    sims = F.normalize(te, dim=1) @ F.normalize(tr, dim=1).T
    top, idx = sims.topk(10, dim=1)
    votes = torch.zeros(50, 5, dtype=torch.float64).scatter_add_(1, ytr[idx], torch.exp(top.double() / 0.07))
    expect = 100.0 * (votes.argmax(1) == yte).float().mean().item()
    assert knn_top1(tr, ytr, te, yte, 5, k=10, temperature=0.07) == pytest.approx(expect)
    # and k-NN on a real dataset's pixels is far above chance (10 %)
    d = load_dataset("digits", "x")
    px = lambda x: x.flatten(1).float()  # noqa: E731
    assert knn_top1(px(d.train_x), d.train_y, px(d.test_x), d.test_y, 10) > 90


def test_a_teacher_file_without_classifier_is_a_headless_teacher(tmp_path):
    """A MoCo-style encoder (no fc.weight) is the teacher of CoSS's ImageNet runs: its pooled feature is
    the target; it is scored by probe and k-NN only, and methods that need its logits are refused."""
    from trainables.models import build_model

    torch.manual_seed(0)
    enc = build_model("mlp", 0, 1, 8, hidden=[256, 256])  # no head at all
    path = tmp_path / "moco_like.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in enc.state_dict().items()}}, path)
    sweep = load_sweep(SWEEPS / "quickstart.yaml", [f"pairs.0.teacher.checkpoint={path}", "train.epochs=1",
                                                   "eval.linear.epochs=2", "eval.linear.milestones=[1]"])
    plan = preflight(sweep, "q.yaml", str(SWEEPS))
    assert plan.teachers[0]["student"]["head"] is False and plan.teachers[0]["train"]["epochs"] == 0
    assert all(s["teacher"]["head"] is False for s in plan.students if s["teacher"])
    t, rep = collect()
    fit(plan.teachers[0], rep, init_state=plan.given[plan.teachers[0]["weights_hash"]])
    assert "eval/knn_top1" in t["metrics"][-1] and "eval/classifier_top1" not in t["metrics"][-1]
    s, rep = collect()
    fit(plan.students[0], rep, plan.given[plan.teachers[0]["weights_hash"]])
    assert s["metrics"][-1]["eval/linear_top1"] > 10

    bad = load_sweep(SWEEPS / "quickstart.yaml", [f"pairs.0.teacher.checkpoint={path}", "setting=supervised",
                                                 "knobs={}", "grid={method: [kd]}"])
    with pytest.raises(Exception, match=r"pairs.0.teacher.checkpoint: this teacher has no classifier.*'kd'"):
        preflight(bad, "q.yaml", str(SWEEPS))


def test_bn_recalibration_gives_the_statistics_of_the_training_images():
    from trainables.trial import recalibrate_bn

    data = load_dataset("digits", "unused")  # digits train without augmentation: the views are the images
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.BatchNorm1d(64))
    model.eval()
    assert recalibrate_bn(model, data, batch_size=719) == 1  # 1438 training images: 2 equal batches
    flat = data.eval_view("train", slice(None)).flatten(1)
    bn = model[1]
    assert torch.allclose(bn.running_mean, flat.mean(0), atol=1e-5)
    # The cumulative average of per-batch unbiased variances, as BatchNorm defines it with momentum None:
    # close to the whole set's variance, and nowhere near the initial 1.
    assert torch.allclose(bn.running_var, flat.var(0), rtol=0.05, atol=1e-3)
    assert bn.momentum == 0.1 and not model.training  # restored


def test_cosine_schedule_decays_to_zero_over_the_epochs():
    from trainables.trial import make_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4)
    sched = make_scheduler(opt, {"lr_schedule": "cosine", "epochs": 4, "milestones": [2], "gamma": 0.1})
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.4, 0.4 * (1 + 2**-0.5) / 2, 0.2, 0.4 * (1 - 2**-0.5) / 2])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_top5_counts_a_label_among_the_five_highest_logits():
    from trainables.evaluate import top5

    logits = torch.tensor([[6., 5., 4., 3., 2., 1., 0.],    # label 4 is 5th highest: hit
                           [6., 5., 4., 3., 2., 1., 0.],    # label 5 is 6th: miss
                           [0., 1., 2., 3., 4., 5., 6.]])   # label 6 is highest: hit
    assert top5(logits, torch.tensor([4, 5, 6])) == pytest.approx(200 / 3)
    assert top5(logits[:, :3], torch.tensor([0, 1, 2])) == 100.0  # fewer than 5 classes: always


def test_progress_prints_a_status_line_with_counts_and_epochs():
    """Plain lines (not a terminal): a block of the running trials at their first result and then every
    `every` seconds, each trial with its epoch, loss and score; a line per finished or failed trial."""
    import io
    from orchestrator.progress import Progress

    out = io.StringIO()
    p = Progress(out, every=0)
    p.begin("sweep x: 3 trials to run", 3)
    trials = [{"name": f"t{i}", "labels": {"pair": "a/b", "run": f"λ={i} · s0"}, "train": {"epochs": 4}}
              for i in range(3)]
    for t in trials:
        p.started(t)
    p.result(trials[0], {"epoch": 3, "eval/knn_top1": 50.0, "train/loss": 0.25, "train/epoch_s": 2.0})
    p.completed(trials[0])
    p.failed(trials[1], "boom")
    p.result(trials[2], {"epoch": 2, "train/epoch_s": 1.0})
    lines = out.getvalue().splitlines()
    assert lines[1].startswith("... 0/3 finished (0 failed), 3 running; elapsed 0s, eta ")
    assert lines[2].split() == ["λ=0", "·", "s0", "epoch", "3/4", "loss", "0.25", "knn", "50.00", "eta", "2s"]
    assert lines[3].split()[:5] == ["λ=1", "·", "s0", "epoch", "0/4"]  # started, nothing reported yet
    assert lines[5].startswith("[1/3] done   λ=0 · s0") and "knn 50.00" in lines[5]
    assert lines[6] == "[2/3] FAILED λ=1 · s0: boom"
    assert lines[7].startswith("... 2/3 finished (1 failed), 1 running;")
    assert lines[8].split()[:5] == ["λ=2", "·", "s0", "epoch", "2/4"]
    assert all(len(ln) <= 100 for ln in lines)


def test_progress_eta_counts_trials_running_together_and_those_not_started():
    """Three students running at once (a pack of three, say), at epoch 5 of 10 at 2 s an epoch: 10 s
    left for them, then the three not started yet as one more wave of 20 s."""
    import io
    from orchestrator.progress import Progress

    p = Progress(io.StringIO(), every=1e9)
    p.begin("sweep x: 6 trials to run", 6)
    trials = [{"name": f"t{i}", "labels": {"pair": "a/b"}, "train": {"epochs": 10}} for i in range(3)]
    for t in trials:
        p.started(t)
    for t in trials:
        p.result(t, {"epoch": 5, "train/epoch_s": 2.0})
    assert p.header().endswith("eta 30s")


def test_progress_on_a_terminal_redraws_the_running_trials_in_place():
    import io
    from orchestrator.progress import Progress

    out = io.StringIO()
    p = Progress(out, live=True)
    p.begin("sweep x: 1 trials to run", 1)
    t = {"name": "t0", "labels": {"pair": "a/b", "run": "λ=0 · s0"}, "train": {"epochs": 2}}
    p.started(t)
    p.result(t, {"epoch": 1, "train/loss": 0.5, "train/epoch_s": 1.0})
    p.completed(t)
    p.summary()
    p.close()
    text = out.getvalue()
    assert "epoch   1/2" in text and "\x1b[" in text  # the block, drawn with cursor moves
    assert "[1/1] done   λ=0 · s0" in text and "all trials finished" in text


@pytest.mark.parametrize("columns", [80, 120])
def test_the_live_view_fits_the_terminal_and_leaves_no_stale_lines(columns, monkeypatch):
    """Six students redrawn on a terminal of COLUMNS (pyte, a VT100 emulator, plays the terminal): while
    they run, one screen row per line, each cut to the width; at the end only the printed lines stay."""
    import io

    import pyte

    from orchestrator.progress import Progress

    monkeypatch.setenv("COLUMNS", str(columns))
    out = io.StringIO()
    p = Progress(out, live=True)
    p.begin("sweep quickstart: 6 trials to run", 6)
    trials = [{"name": f"t{i}", "labels": {"pair": "mlp-256-256/mlp-64", "run": f"λ={i / 2:g} · s{i % 2}"},
               "train": {"epochs": 30}} for i in range(6)]
    for t in trials:
        p.started(t)
    for epoch in (1, 2, 3):
        for t in trials:
            p.result(t, {"epoch": epoch, "train/loss": -0.6937, "train/epoch_s": 0.9, "curve/knn_top1": 91.23,
                         "eval/linear_top1": 95.0, "eval/knn_top1": 94.5})

    def screen() -> list[str]:
        term = pyte.Screen(columns, 30)
        pyte.Stream(term).feed(out.getvalue().replace("\n", "\r\n"))
        return [row.rstrip() for row in term.display if row.strip()]

    running = screen()
    assert running[0] == "sweep quickstart: 6 trials to run"
    assert running[1].startswith("... 0/6 finished (0 failed), 6 running;")
    assert len(running) == 8 and all(row.startswith("  λ=") and "epoch   3/30" in row for row in running[2:])
    for t in trials[:4]:
        p.completed(t)
    p.failed(trials[4], "loss is not finite at epoch 4, step 2 (coss=nan)")
    p.completed(trials[5])
    p.summary()
    p.close()
    done = screen()
    assert done[0] == "sweep quickstart: 6 trials to run"
    assert [row.split()[:2] for row in done[1:5]] == [[f"[{i}/6]", "done"] for i in range(1, 5)]
    assert all(len(row) <= min(columns, 100) for row in done)
    assert not [row for row in done if row.startswith("...") or "/30 " in row]  # no block left behind
    assert done[-1] == "  λ=2 · s0: loss is not finite at epoch 4, step 2 (coss=nan)"


def test_gpu_out_of_memory_names_the_trial_and_its_batch_size(plan, monkeypatch):
    import trainables.trial as trial

    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trial, "train_epoch", oom)
    cfg = copy.deepcopy(plan.teachers[0])
    with pytest.raises(RuntimeError) as e:
        fit(cfg, collect()[1])
    msg = str(e.value)
    assert f"GPU out of memory in trial {cfg['name']} at batch size {cfg['train']['batch_size']}" in msg
    assert "lower train.batch_size" in msg and isinstance(e.value.__cause__, torch.cuda.OutOfMemoryError)


def test_bf16_autocasts_the_step_and_scores_like_fp32(plan):
    t, rep = collect()
    fit(plan.teachers[0], rep)
    base = copy.deepcopy(plan.students[-3])  # coss, lambda 1.0, 4 epochs on digits
    seen = []
    import trainables.trial as trial

    real = trial.make_model

    def spy(*a, **k):
        m = real(*a, **k)
        m.register_forward_hook(lambda mod, inp, out: seen.append(out.feature.dtype) if mod.training else None)
        return m

    scores = {}
    for precision in ("fp32", "bf16"):
        cfg = {**base, "precision": precision}
        got, rep = collect()
        seen.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(trial, "make_model", spy)
            fit(cfg, rep, t["model"])
        assert set(seen) == {torch.bfloat16 if precision == "bf16" else torch.float32}
        assert all(torch.isfinite(torch.tensor(m["train/loss"])) for m in got["metrics"])
        assert all(v.dtype == torch.float32 for v in got["model"].values() if v.is_floating_point())
        scores[precision] = got["metrics"][-1]["eval/knn_top1"]
    assert abs(scores["bf16"] - scores["fp32"]) < 3.0, scores  # 359 test digits: 3 points is ~11 images


def test_a_fractional_gpu_trial_is_held_to_its_share_of_the_memory(monkeypatch):
    from trainables.trial import limit_gpu_memory

    calls = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d: calls.append((f, d)))
    cuda = torch.device("cuda")
    assert limit_gpu_memory({"resources": {"gpu": 0.25}}, cuda) == 0.25
    assert limit_gpu_memory({"resources": {"gpu": 1}}, cuda) is None  # whole: the cap is lifted again
    assert limit_gpu_memory({"resources": {"gpu": 2}}, cuda) is None
    assert limit_gpu_memory({"resources": {"gpu": 0}}, torch.device("cpu")) is None
    assert calls == [(0.25, cuda), (1.0, cuda), (1.0, cuda)]


def test_compile_runs_the_models_through_torch_compile_with_the_same_numbers(plan):
    import torch._dynamo

    base = copy.deepcopy(plan.teachers[0])
    base["train"] = {**base["train"], "epochs": 1}
    base["eval"] = {"classifier": {}}
    plain, rep = collect()
    fit(base, rep)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled, rep = collect()
    fit({**base, "compile": True}, rep)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the forward really was compiled
    (a,), (b,) = plain["metrics"], compiled["metrics"]
    for k in ("train/loss", "eval/classifier_top1"):
        assert b[k] == pytest.approx(a[k], rel=1e-3, abs=0.5), k
    assert set(compiled["model"]) == set(plain["model"])  # no _orig_mod. prefixes in the weights


def test_ray_stopping_a_finished_actor_prints_no_traceback_but_other_ignored_errors_still_show(monkeypatch):
    """Ray's SIGTERM handler raises SystemExit wherever the actor is; inside a GC callback Python would
    print "Exception ignored in: WeakSet..." to the driver. Only that is silenced."""
    import types

    from trainables import tune_trial

    seen = []
    monkeypatch.setattr("sys.__unraisablehook__", seen.append)
    tune_trial._quiet_stop(types.SimpleNamespace(exc_value=SystemExit(1)))
    assert seen == []
    other = types.SimpleNamespace(exc_value=ValueError("x"))
    tune_trial._quiet_stop(other)
    assert seen == [other]
