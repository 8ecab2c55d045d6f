"""bench/step_candidates.py's claims that docs/throughput.md repeats: the hand-written pooling
backward gives torch's NCHW kernel's bits in every shape it takes, and every rewrite keeps the
model's weights (so "same bits" compares like with like)."""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fedkd.models import build_model

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "step_candidates.py"  # bench/ is no package
_spec = importlib.util.spec_from_file_location("step_candidates", SCRIPT)
candidates = importlib.util.module_from_spec(_spec)
sys.modules["step_candidates"] = candidates
_spec.loader.exec_module(candidates)


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 4),
    c=st.integers(1, 9),
    out=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    block=st.tuples(st.integers(1, 8), st.integers(1, 8)),
    seed=st.integers(0, 2**31 - 1),
)
@example(b=2, c=3, out=(1, 1), block=(3, 5), seed=0)  # a 1 x 1 output: torch's mean, not the kernel
def test_block_pool_backward_has_the_nchw_kernels_bits(b, c, out, block, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (b, c, out[0] * block[0], out[1] * block[1])
    x = torch.randn(shape, generator=g)
    grad = torch.randn(b, c, *out, generator=g) * 3.7  # a scale that makes the rounding matter

    reference = x.clone().requires_grad_()
    torch.nn.functional.adaptive_avg_pool2d(reference, out).backward(grad)  # NCHW in, NCHW kernel
    pool = candidates._BlockPool(out)
    for layout in (torch.contiguous_format, torch.channels_last):
        mine = x.clone().contiguous(memory_format=layout).requires_grad_()
        y = pool(mine)
        assert ("BlockAverage" in type(y.grad_fn).__name__) == (out != (1, 1))  # the hand-written one ran
        assert torch.equal(y, torch.nn.functional.adaptive_avg_pool2d(mine.detach(), out))
        y.backward(grad)
        assert torch.equal(mine.grad, reference.grad)


@pytest.mark.parametrize("candidate", sorted(candidates.CANDIDATES))
def test_rewrites_keep_the_weights_and_change_the_layers(candidate):
    rewrite, models = candidates.CANDIDATES[candidate]
    for name in models:
        built = build_model(name, (3, 32, 32), 10, seed=0)
        before = {k: v.clone() for k, v in built.state_dict().items()}
        layers = [repr(m) for m in built.modules()]
        after = rewrite(built)
        assert after.state_dict().keys() == before.keys()
        assert all(torch.equal(after.state_dict()[k], before[k]) for k in before)
        assert ([repr(m) for m in after.modules()] == layers) == (candidate == "none")
        assert after(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    ("candidate", "name", "same"),
    [
        ("none", "cnn-s", True),
        ("layout-pool-backward", "cnn-s", True),
        ("tanh-via-sigmoid", "lenet5", False),
        ("tanh-via-sigmoid-fn", "lenet5", False),
    ],
)
def test_compare_reports_whether_the_bits_stay(candidate, name, same):
    rewrite, _ = candidates.CANDIDATES[candidate]
    result = candidates.compare(name, (3, 32, 32), rewrite, reps=1)
    assert result["same_bits"] is same
    assert result["now"] > 0 and result["candidate"] > 0


SWEEP_CELL = Path(__file__).resolve().parents[1] / "bench" / "sweep_cell.py"
_cell_spec = importlib.util.spec_from_file_location("sweep_cell", SWEEP_CELL)
sweep_cell = importlib.util.module_from_spec(_cell_spec)
_cell_spec.loader.exec_module(sweep_cell)


def test_sweep_cell_is_the_fair_cell_and_every_run_has_a_published_twin(shared_data):
    """bench/sweep_cell.py times fair-mnist's runs at one alpha (local, the control, KnFu, 10
    seeds) and checks each against the published runs.csv: every run it makes must have one."""
    runs = sweep_cell.cell(str(shared_data), 10, 0.5, ["local", "self-distill", "knfu"])
    keys = {(r.axes["algorithm"], r.axes["seed"]) for r in runs}
    assert len(runs) == len(keys) == 30
    assert {r.axes["alpha"] for r in runs} == {0.5}
    assert all(r.config.train.budget_match == "steps" and r.config.run.rounds == 50 for r in runs)
    published = sweep_cell.published(0.5)
    assert keys <= published.keys()
    assert all(text == sweep_cell.csv_cell(float(text)) for text in published.values())  # as written
    with pytest.raises(SystemExit, match="expected 33"):
        sweep_cell.cell(
            str(shared_data), 11, 0.5, ["local", "self-distill", "knfu"]
        )  # fair-mnist has 10 seeds


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    scale=st.floats(0.01, 30.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_tanh_by_sigmoid_function_is_tanh_forward_and_backward(shape, scale, seed):
    """The candidate keeps lenet5's function: tanh's values (to float32 rounding of the identity
    2 sigmoid(2x) - 1) and tanh's gradient g (1 - y^2) on its own output."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * scale).requires_grad_()
    grad = torch.randn(shape, generator=g)
    y = candidates._TanhFunction()(x)
    assert "TanhBySigmoid" in type(y.grad_fn).__name__  # the one function, not the plain identity
    reference = x.detach().clone().requires_grad_()
    expected = torch.tanh(reference)
    torch.testing.assert_close(y, expected, rtol=0, atol=3e-7)
    y.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, grad * (1 - y.detach() ** 2), rtol=0, atol=1e-6)
    torch.testing.assert_close(x.grad, reference.grad, rtol=0, atol=2e-6)


def test_candidates_option_is_written_only_when_it_chose():
    assert candidates._chosen(list(candidates.CANDIDATES)) == ""
    assert candidates._chosen(["none", "tanh-via-sigmoid-fn"]) == " --candidates none tanh-via-sigmoid-fn"


def test_sweep_cell_swaps_in_a_candidates_rewrite_of_every_client_model_and_back(tiny):
    """--candidate's swap replaces fedkd's client model builder (the one every engine's client
    step calls), its counter turns positive once the rewrite changed a model (in place too), and
    the builder is back afterwards. A rewrite that changes none of the models leaves it at 0."""
    import fedkd.client_steps as steps
    from fedkd.client_steps import training_data

    cfg = tiny.with_overrides({"models": "lenet5"})
    data = training_data(cfg, 0)

    def tanh_modules() -> list[str]:
        model = steps._model(cfg, 0, data, None)
        return [type(m).__name__ for m in model.modules() if "Tanh" in type(m).__name__]

    plain = tanh_modules()
    assert plain and set(plain) == {"Tanh"}
    with sweep_cell.rewritten_models("tanh-via-sigmoid-fn") as applied:
        assert applied.value == 0
        assert tanh_modules() == ["_TanhFunction"] * len(plain)
        assert applied.value == 1
        assert tanh_modules() == ["_TanhFunction"] * len(plain)
    assert tanh_modules() == plain
    with sweep_cell.rewritten_models("inplace-activations") as applied:  # lenet5 has no ReLU
        steps._model(cfg, 0, data, None)
        assert applied.value == 0
    relu = tiny.with_overrides({"models": "cnn-s"})
    with sweep_cell.rewritten_models("inplace-activations") as applied:  # changed in place
        steps._model(relu, 0, training_data(relu, 0), None)
        assert applied.value == 1


def _tiny_runs(tiny, seeds: int) -> list:
    from experiments.sweep import PlannedRun

    return [
        PlannedRun(
            f"tiny-knfu-{seed}",
            {"algorithm": "knfu", "seed": seed},
            tiny.with_overrides({"models": "lenet5", "rounds": 1, "algorithm": "knfu", "seed": seed}),
        )
        for seed in range(seeds)
    ]


def test_sweep_cell_candidate_reaches_forked_workers(tiny):
    """Two workers, as the bench runs: the rewrite (and its counter) crosses the fork."""
    assert multiprocessing.get_start_method() == "fork"  # what the bench needs, and checks
    seconds, alma = sweep_cell.run_cell(_tiny_runs(tiny, 2), 2, "candidate", "tanh-via-sigmoid-fn")
    assert seconds > 0 and set(alma) == {("knfu", 0), ("knfu", 1)}
    with pytest.raises(SystemExit, match="no client model was rewritten: inplace-activations"):
        sweep_cell.run_cell(_tiny_runs(tiny, 2), 2, "candidate", "inplace-activations")  # no ReLU in lenet5


def test_sweep_cell_runs_the_candidate_variant_and_stops_when_no_model_was_rewritten(tiny, monkeypatch):
    runs = _tiny_runs(tiny, 1)
    seconds, alma = sweep_cell.run_cell(runs, 1, "candidate", "tanh-via-sigmoid-fn")
    assert seconds > 0 and set(alma) == {("knfu", 0)}

    @contextmanager
    def never_rewrites(candidate: str):
        yield multiprocessing.Value("i", 0)

    monkeypatch.setattr(sweep_cell, "rewritten_models", never_rewrites)
    with pytest.raises(SystemExit, match="no client model was rewritten: tanh-via-sigmoid-fn"):
        sweep_cell.run_cell(runs, 1, "candidate", "tanh-via-sigmoid-fn")


def test_sweep_cell_report_shows_every_variant_and_the_candidates_ratios():
    args = argparse.Namespace(
        workers=2, seeds=1, alpha=0.5, algorithms=["knfu"], first="before", candidate="tanh-via-sigmoid-fn"
    )
    runs = [object()] * 2
    seconds = {"before": 300.0, "after": 200.0, "candidate": 150.0}
    published = float(sweep_cell.published(0.5)[("knfu", 0)])
    alma = {
        "before": {("knfu", 0): 0.5, ("knfu", 1): 0.6},
        "after": {("knfu", 0): published, ("knfu", 1): 0.6},
        "candidate": {("knfu", 0): published, ("knfu", 1): 0.63},
    }
    text = "\n".join(sweep_cell.report(args, runs, "measured", seconds, alma))
    assert "--candidate tanh-via-sigmoid-fn (measured)" in text
    assert "candidate (the step now with tanh-via-sigmoid-fn): 150 s, 48 runs/hour" in text
    assert "after/before: 1.50x" in text
    assert "candidate/before: 2.00x (target >= 1.5x); candidate/after: 1.33x" in text
    assert "final ALMA, candidate against after: largest change 0.0300" in text
    assert f"final ALMA, after against before: largest change {abs(published - 0.5):.4f}" in text
    assert "runs.csv: before 0 of 2, after 1 of 2, candidate 1 of 2" in text
    args.candidate = None
    del seconds["candidate"], alma["candidate"]
    text = "\n".join(sweep_cell.report(args, runs, "measured", seconds, alma))
    assert "candidate" not in text


@pytest.mark.parametrize(
    ("script", "arguments", "message"),
    [
        (SWEEP_CELL, ["--profile", "knfu", "--candidate", "tanh-via-sigmoid-fn"], "not both"),
        (SCRIPT, ["--candidates", "none", "none"], "--candidates names none twice"),
        (SCRIPT, ["--candidates", "bogus"], "invalid choice: 'bogus'"),
    ],
)
def test_bench_options_that_cannot_be_met_exit_2_naming_the_bad_value(script, arguments, message):
    result = subprocess.run([sys.executable, str(script), *arguments], capture_output=True, text=True)
    assert result.returncode == 2
    assert message in result.stderr.splitlines()[-1]
