"""`compile:` takes true, false or reduce-overhead (CUDA graphs for the training step); anything else is
one line naming the field. On CPU, reduce-overhead compiles the step without graphs, says so, and gives
eager's numbers. (Its CUDA-graph replay is tested in test_gpu.py.)"""
import copy
import warnings

import pytest

from orchestrator.runner import preflight
from orchestrator.spec import SpecError, load_sweep
from trainables.trial import fit

from .conftest import SWEEPS


@pytest.mark.parametrize("value,expect", [("true", True), ("false", False), ("reduce-overhead", "reduce-overhead")])
def test_the_spec_takes_true_false_and_reduce_overhead_and_the_trials_carry_it(value, expect):
    sweep = load_sweep(SWEEPS / "quickstart.yaml", [f"compile={value}"])
    assert sweep.compile == expect
    plan = preflight(sweep, "quickstart.yaml", str(SWEEPS))
    for cfg in plan.teachers + plan.students:
        assert cfg.get("compile", False) == expect, cfg["name"]


@pytest.mark.parametrize("value", ["fast", "max-autotune", "1", "reduce_overhead"])
def test_any_other_compile_value_is_refused_naming_the_field_and_the_choices(value):
    with pytest.raises(SpecError) as e:
        load_sweep(SWEEPS / "quickstart.yaml", [f"compile={value}"])
    assert e.value.field == "compile"
    assert "true, false or reduce-overhead" in e.value.msg and repr(value if value != "1" else 1) in e.value.msg


def test_reduce_overhead_on_cpu_compiles_the_step_without_graphs_says_so_and_gives_eager_numbers():
    import torch._dynamo

    sweep = load_sweep(SWEEPS / "quickstart.yaml", ["train.epochs=1", "teacher_train.epochs=1"])
    base = copy.deepcopy(preflight(sweep, "quickstart.yaml", str(SWEEPS)).teachers[0])
    base["eval"] = {"classifier": {}}
    got = {}
    for mode in (False, "reduce-overhead"):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        rows = []
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            fit({**base, "compile": mode}, lambda m, s, f: rows.append((m, f)))
        compiled = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        said = [str(w.message) for w in seen if "CUDA graphs need a CUDA device" in str(w.message)]
        got[mode] = rows[-1], compiled, said
    (plain, plain_model), plain_graphs, plain_said = got[False]
    (fused, fused_model), graphs, said = got["reduce-overhead"]
    assert plain_graphs == 0 and not plain_said
    assert graphs >= 1, "the training step was not compiled"
    assert said and "on cpu the training step is compiled without them" in said[0]
    for k in ("train/loss", "eval/classifier_top1"):
        assert fused[k] == pytest.approx(plain[k], rel=1e-3, abs=0.5), k
    assert set(fused_model) == set(plain_model)  # the weights keep their names: no _orig_mod. prefix
