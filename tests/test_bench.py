"""`kd-sweep bench`'s arithmetic: FLOPs per image agree with the reference loop's own count
(../shared/bench/README.md: 3.23 G for resnet32x4->resnet8x4, 0.50 G for resnet56->resnet20)."""
import pytest

from orchestrator.bench import flops_per_image


@pytest.mark.parametrize("teacher,student,gflops", [("resnet32x4", "resnet8x4", 3.23), ("resnet56", "resnet20", 0.50)])
def test_flops_per_image_match_the_reference_loop(teacher, student, gflops):
    assert flops_per_image(teacher, student, "cpu") / 1e9 == pytest.approx(gflops, rel=0.02)
