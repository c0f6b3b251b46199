"""One reader of weight files: teacher checkpoints and the ImageNet models' `weights=` unwrap the same way
and fail with the same errors."""
import pytest
import torch

from trainables.checkpoints import CheckpointError, load_into, read_state_dict
from trainables.models import build_model


def _mlp(hidden):
    return build_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=[hidden])


def test_a_file_with_both_wrappers_is_read_through_model(tmp_path):
    torch.manual_seed(0)
    model, other = _mlp(16), _mlp(32)
    path = tmp_path / "both.pth"
    torch.save({"model": model.state_dict(), "state_dict": other.state_dict()}, path)
    state = read_state_dict(str(path))
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_imagenet_weights_take_the_same_wrapper(tmp_path):
    """The ImageNet reader used to take 'state_dict' first: the same file now loads the same weights."""
    torch.manual_seed(0)
    good = build_model("resnet18", 10, 3, 32).state_dict()
    wrong = {k: torch.zeros_like(v) for k, v in good.items()}
    path = tmp_path / "both.pth"
    torch.save({"model": good, "state_dict": wrong}, path)
    loaded = build_model("resnet18", 10, 3, 32, weights=str(path)).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in good.items())


def test_a_file_without_batch_counters_loads_as_a_teacher(tmp_path):
    """Old torchvision-era files have no `num_batches_tracked`: the ImageNet reader always took them, and
    the teacher path, which is the same reader now, takes them too."""
    src = build_model("resnet8", 10, 3, 32)
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in src.state_dict().items() if "num_batches_tracked" not in k}, path)
    dst = build_model("resnet8", 10, 3, 32)
    load_into(dst, read_state_dict(str(path)), str(path))
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in src.state_dict().items())


def test_a_broken_imagenet_weights_file_is_a_checkpoint_error_and_a_value_error(tmp_path):
    """Callers that build models catch ValueError for an option that does not build; the runner catches
    CheckpointError for a teacher file: one error serves both."""
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty") as e:
        build_model("mobilenet_v2", 1000, 3, 32, weights=str(tmp_path / "empty.pth"))
    assert isinstance(e.value, ValueError)
