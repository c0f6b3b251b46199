"""Teacher files: RepDistiller/mdistiller and plain formats load, mismatches name the key, code is refused."""
import pickle

import pytest
import torch

from trainables.checkpoints import CheckpointError, load_into, read_state_dict
from trainables.models import build_model


def mlp(hidden=(16,)):
    return build_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=list(hidden))


@pytest.mark.parametrize("wrap", [lambda sd: {"model": sd, "epoch": 240, "accuracy": 79.4},  # RepDistiller
                                  lambda sd: sd,                                               # plain
                                  lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}}])
def test_formats_round_trip(tmp_path, wrap):
    torch.manual_seed(0)
    src = mlp()
    path = tmp_path / "t.pth"
    torch.save(wrap(src.state_dict()), path)
    dst = mlp()
    load_into(dst, read_state_dict(str(path)), str(path))
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(src(x).logits, dst(x).logits)


def test_shape_mismatch_names_the_first_key(tmp_path):
    path = tmp_path / "t.pth"
    torch.save({"model": mlp((16,)).state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"key 'linears.0.weight' has shape \(16, 64\), the model expects \(32, 64\)"):
        load_into(mlp((32,)), read_state_dict(str(path)), str(path))
    with pytest.raises(CheckpointError, match="missing key 'linears.1.weight'"):
        load_into(mlp((16, 16)), read_state_dict(str(path)), str(path))


class Payload:
    def __reduce__(self):
        return (print, ("this ran",))


def test_a_pickle_that_holds_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": Payload()}, f)
    with pytest.raises(CheckpointError, match="not a weights-only checkpoint"):
        read_state_dict(str(path))
    assert "this ran" not in capsys.readouterr().out


def test_a_dict_without_tensors_is_refused(tmp_path):
    path = tmp_path / "t.pth"
    torch.save({"epoch": 3, "note": "no weights"}, path)
    with pytest.raises(CheckpointError, match="holds no state dict"):
        read_state_dict(str(path))
