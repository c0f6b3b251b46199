"""kd-sweep's losses against the values of RepDistiller's (CRD's released code), stored with their inputs.

tests/fixtures/authors/repdistiller.json holds, for each of the 13 losses CRD's tables (and CoSS supp.
Table 1) ran, float64 inputs and learnable weights, the value the authors' class gave on them, and where
that class lives (repository, commit, file). Here the same inputs and weights go through kd-sweep's
method, with the knobs the case names (weight 1, and for FT and CC the form of RepDistiller's loss), and
the sum of the named terms must equal the authors' value to 1e-6 relative.
"""
import json
from pathlib import Path

import pytest
import torch

from trainables.methods import crd as crd_module

from ..method_helpers import make, step

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "authors" / "repdistiller.json"
DATA = json.loads(FIXTURE.read_text())
CASES = DATA["cases"]


def tensor(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def test_fixture_names_its_source_and_all_13_losses():
    assert DATA["source"]["repository"] == "https://github.com/HobbitLong/RepDistiller"
    assert len(DATA["source"]["commit"]) == 40
    assert set(CASES) == {"kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst", "crd"}
    assert all(c["source"]["file"] and c["source"]["class"] for c in CASES.values())


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_equals_repdistiller(name, monkeypatch):
    c = CASES[name]
    inp = c["inputs"]
    s_maps = [tensor(x) for x in inp.get("s_maps", [])]
    t_maps = [tensor(x) for x in inp.get("t_maps", [])]
    b = len(next(iter(inp.values())))
    s_feat = tensor(inp["s_feature"]) if "s_feature" in inp else torch.zeros(b, 1, dtype=torch.float64)
    t_feat = tensor(inp["t_feature"]) if "t_feature" in inp else torch.zeros(b, 1, dtype=torch.float64)
    s_logits = tensor(inp["s_logits"]) if "s_logits" in inp else None
    t_logits = tensor(inp["t_logits"]) if "t_logits" in inp else None
    m = make(c["method"], s_feat.shape[1], t_feat.shape[1], s_maps=[f.shape[1:] for f in s_maps],
             t_maps=[f.shape[1:] for f in t_maps], classes=0 if s_logits is None else s_logits.shape[1],
             num_train=c.get("num_train", 100), **c["knobs"]).double().train()
    if "params" in c:
        state = m.state_dict()
        for key, value in c["params"].items():
            assert key in state and state[key].shape == tensor(value).shape, key
            state[key] = tensor(value)
        m.load_state_dict(state)
    idx = None
    if "contrast_idx" in inp:  # CRD: the authors were given these negatives; ours draws its own
        idx = torch.tensor(inp["idx"])
        contrast = torch.tensor(inp["contrast_idx"])

        def given(pos, n, k):
            assert torch.equal(pos, idx) and (n, k) == (c["num_train"], contrast.shape[1] - 1)
            return contrast
        monkeypatch.setattr(crd_module, "contrast_indices", given)
    terms = m(step(s_feat, t_feat, s_logits=s_logits, t_logits=t_logits, s_maps=s_maps, t_maps=t_maps, idx=idx))
    names = c["term"] if isinstance(c["term"], list) else [c["term"]]
    assert set(terms) == set(names)
    got = sum(terms[n] for n in names).item()
    assert got == pytest.approx(c["value"], rel=1e-6, abs=0)
