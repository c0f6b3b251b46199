"""`kd-sweep bench`'s arithmetic: FLOPs per image agree with the reference loop's own count
(../shared/bench/README.md: 3.23 G for resnet32x4->resnet8x4, 0.50 G for resnet56->resnet20)."""
import pytest

from orchestrator.bench import flops_per_image


@pytest.mark.parametrize("teacher,student,gflops", [("resnet32x4", "resnet8x4", 3.23), ("resnet56", "resnet20", 0.50)])
def test_flops_per_image_match_the_reference_loop(teacher, student, gflops):
    assert flops_per_image(teacher, student, "cpu") / 1e9 == pytest.approx(gflops, rel=0.02)


def test_training_flops_of_an_mlp_equal_the_hand_count():
    """digits-shaped input (1x8x8 = 64): student 64->16 (+ head 16->10), teacher 64->32 (+ head 32->10).
    Forward: 2*64*16 + 2*16*10 = 2368; the backward of the feature reaches the first layer's weight only
    (the input needs no gradient): 2*64*16 = 2048. Teacher forward: 2*64*32 + 2*32*10 = 4736."""
    from orchestrator.flops import training_flops

    student, teacher = ("mlp", {"hidden": [16]}), ("mlp", {"hidden": [32]})
    assert training_flops(student, None, 10, 1, 8) == 2368 + 2048
    assert training_flops(student, teacher, 10, 1, 8) == 2368 + 2048 + 4736


def test_the_driver_and_the_trial_actor_start_without_torchvision():
    """Every `kd-sweep` command and every Ray trial actor imports these; torchvision (~2 s on 2 cores)
    is imported only where a torchvision dataset or model is built."""
    import subprocess
    import sys

    code = ("import sys, orchestrator.cli, orchestrator.runner, trainables.tune_trial, results.report;"
            " from trainables.datasets import DATASETS; from trainables.models import MODELS;"
            " assert 'resnet50' in MODELS.names() and 'cifar100' in DATASETS.names();"
            " print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"



def test_the_plain_loop_is_the_projects_own_and_times_a_real_loop(tmp_path):
    """`kd-sweep bench`'s yardstick runs from an installed kd-sweep, in any folder: it trains on CIFAR-100
    files in torchvision's format and prints its rate."""
    import re
    import subprocess
    import sys

    from trainables.datasets.synthetic import write_cifar100

    write_cifar100(tmp_path / "data", n_train=96, n_test=16)
    res = subprocess.run([sys.executable, "-m", "orchestrator.plain_loop", str(tmp_path / "data"), "--steps", "7",
                          "--batch", "16", "--workers", "0", "--teacher", "resnet8", "--student", "resnet8"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    m = re.fullmatch(r"plain loop: ([\d.]+) images/s \(resnet8->resnet8, batch 16, cpu\)\n", res.stdout)
    assert m and float(m.group(1)) > 0, res.stdout


def test_the_small_model_bench_times_rrkds_mnist_student_in_both_loops(tmp_path):
    """`--task mnist-rrkd`: the plain loop trains RRKD's AE-32 on MNIST files (the release's .gz form),
    and its loss really is RRKD's: the same value as kd-sweep's method on the same batch. kd-sweep's side of
    the comparison is its own trial on the same files, timed by the trial."""
    import re
    import subprocess
    import sys

    import torch

    from orchestrator.bench import mnist_trainable_rate
    from orchestrator.plain_loop import rrkd_loss
    from trainables.datasets.synthetic import write_mnist
    from trainables.methods.rrkd import relative
    from trainables.methods.rrkd import rrkd_loss as ours

    write_mnist(tmp_path / "data", 16 * 8, 32, archives=True)
    for f in (tmp_path / "data" / "MNIST" / "raw").glob("*-ubyte"):
        f.unlink()  # the archives alone, as a mirror gives them
    res = subprocess.run([sys.executable, "-m", "orchestrator.plain_loop", str(tmp_path / "data"), "--task", "mnist-rrkd",
                          "--steps", "7", "--batch", "16", "--workers", "0", "--threads", "1"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    m = re.fullmatch(r"plain loop: ([\d.]+) images/s \(mnist ae_encoder-128->ae_encoder-64, RRKD, batch 16, cpu,"
                     r" threads 1\)\n", res.stdout)
    assert m and float(m.group(1)) > 0, res.stdout
    s, t = torch.randn(8, 32), torch.randn(8, 64)
    assert rrkd_loss(s, t).item() == pytest.approx(ours(relative(s, s), relative(t, t)).item(), abs=1e-6)
    assert mnist_trainable_rate(str(tmp_path / "data"), 4, 1) > 0


def test_product_code_reads_nothing_outside_the_package():
    """A user's clone has no ../shared: no module of kd-sweep names a path there."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    offenders = [f"{p.relative_to(repo)}:{i}" for room in ("orchestrator", "trainables", "results")
                 for p in (repo / room).rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"""["'/]shared["'/]|parents\[\d\]\.parent""", line)]
    assert offenders == []
