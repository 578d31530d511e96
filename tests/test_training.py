"""train_tiny: the default recipes learn their tasks, runs are deterministic, models save and load exactly."""

from __future__ import annotations

import json

import pytest
import torch

from tscope_widgets.models import TinyTransformer
from tscope_widgets.training import evaluate, load_model, save_model, train_tiny


@pytest.mark.slow
def test_induction_default_recipe_learns_in_context_copying():
    """Full default run (1000 steps, about 10-15 s on one core); seed 0 reaches 0.999 held out."""
    result = train_tiny("induction", seed=0, progress=False)
    task = result.task
    assert len(result.losses) == 1000 and result.accuracy > 0.98
    # Targets are random symbols (chance 1/24), so accuracy means copying from context; both the
    # shortest and the longest segment length work, so no fixed positional offset explains it.
    for k in (task.k_min, task.k_max):
        batch = task.sample(512, torch.Generator().manual_seed(7), k=k)
        assert evaluate(result.model, task, batch) > 0.95, k
    assert result.losses[-1] < 0.1 * result.losses[0]
    assert [s for s, _ in result.eval_history] == list(range(100, 1001, 100))


@pytest.mark.slow
def test_modadd_default_recipe_generalises_to_held_out_pairs():
    """Full default run (700 full-batch steps, about 20 s on one core); seeds 0-3 reach 1.0 held out."""
    result = train_tiny("modadd", seed=0, progress=False)
    task = result.task
    assert result.accuracy > 0.97  # the 20% of (a, b) pairs never trained on; chance is 1/31
    assert evaluate(result.model, task, task.split("train")) == 1.0
    assert result.config["task_kwargs"] == {"p": 31, "train_fraction": 0.8, "split_seed": 0}


def test_same_seed_same_run_and_global_state_untouched():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    threads = torch.get_num_threads()
    a = train_tiny("induction", steps=30, seed=3, progress=False, log_every=10)
    b = train_tiny("induction", steps=30, seed=3, progress=False, log_every=10)
    c = train_tiny("induction", steps=30, seed=4, progress=False, log_every=10)
    assert a.losses == b.losses and a.eval_history == b.eval_history
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert a.losses != c.losses
    assert torch.equal(torch.get_rng_state(), before) and torch.get_num_threads() == threads


def test_trajectory_checkpoints_are_independent_copies():
    result = train_tiny("modadd", steps=25, progress=False, save_trajectory_every=10)
    steps = [s for s, _ in result.checkpoints]
    assert steps == [0, 10, 20, 25]
    final = result.model.state_dict()
    for name, value in result.checkpoints[-1][1].items():
        assert torch.equal(value, final[name]) and value.data_ptr() != final[name].data_ptr()
    assert not torch.equal(result.checkpoints[0][1]["head.weight"], final["head.weight"])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        init = TinyTransformer(result.model.config).state_dict()
    for name, value in result.checkpoints[0][1].items():
        assert torch.equal(value, init[name]), name


@pytest.mark.parametrize("overrides", [{}, {"tie_weights": True}])
def test_save_load_round_trip_is_exact(tmp_path, overrides):
    result = train_tiny("induction", steps=5, progress=False, config=overrides)
    if overrides:
        result.model.double()
    save_model(tmp_path, result, extra={"note": "test"})
    model, info = load_model(tmp_path)
    assert model.config == result.model.config and not model.training
    saved, loaded = result.model.state_dict(), model.state_dict()
    assert saved.keys() == loaded.keys()
    for name in saved:
        assert saved[name].dtype == loaded[name].dtype and torch.equal(saved[name], loaded[name]), name
    if overrides:
        assert model.head.weight is model.wte.weight and model.wte.weight.dtype == torch.float64
    ids = result.task.sample(4, torch.Generator().manual_seed(0))["input_ids"]
    assert torch.equal(model(ids), result.model.eval()(ids))
    assert info["training"]["task"] == "induction" and info["training"]["steps"] == 5
    assert info["extra"] == {"note": "test"}
    json.loads((tmp_path / "model.json").read_text())  # plain JSON, no pickle anywhere


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.json"):
        load_model(tmp_path)
    save_model(tmp_path, train_tiny("modadd", steps=1, progress=False).model)
    (tmp_path / "model.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a tscope_widgets tiny-model config"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"task": "copy"},
            ValueError,
            r"no training recipe for task 'copy'; available: \['induction', 'modadd'\]",
        ),
        ({"steps": 0}, ValueError, "steps must be >= 1"),
        ({"steps": 2.5}, TypeError, "steps must be an int"),
        ({"config": {"d_modle": 8}}, ValueError, r"unknown TinyConfig fields \['d_modle'\]"),
        ({"config": {"vocab_size": 4}}, ValueError, "vocab_size=4 < the task's vocab_size=26"),
        ({"task": "induction", "batch_size": None}, ValueError, "no fixed train split"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        train_tiny(**{"progress": False, "steps": 1, **kwargs})


def _small_gpt2(vocab: int = 32, positions: int = 32):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=vocab, n_positions=positions, n_embd=16, n_layer=1, n_head=2,
                                     n_inner=32)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


def test_train_model_trains_a_hugging_face_model_in_place_on_a_task():
    from tscope_widgets import train_model

    model = _small_gpt2()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    task_kwargs = {"num_symbols": 8, "k_max": 4, "k_min": 2}
    result = train_model(model, "induction", steps=60, seed=3, task_kwargs=task_kwargs, log_every=30, progress=False)
    assert result.model is model and not model.training
    assert result.config["model"] == "GPT2LMHeadModel" and result.config["steps"] == 60
    assert [s for s, _ in result.eval_history] == [30, 60]
    assert sum(result.losses[-10:]) < 0.9 * sum(result.losses[:10])  # it learns (chance loss is log 8)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.accuracy == evaluate(model, result.task, result.task.held_out(torch.Generator().manual_seed(4)))
    again = train_model(_small_gpt2(), "induction", steps=60, seed=3, task_kwargs=task_kwargs, log_every=30,
                        progress=False)
    assert again.losses == result.losses  # seeded batches, same initial weights


@pytest.mark.parametrize(
    ("vocab", "positions", "match"),
    [(8, 32, r"uses \d+ token ids, more than the model's vocabulary of 8"),
     (32, 8, r"sequences of \d+ tokens, more than the model's 8 positions")],
)
def test_train_model_refuses_a_task_the_model_cannot_take(vocab, positions, match):
    from tscope_widgets import train_model

    with pytest.raises(ValueError, match=match):
        train_model(_small_gpt2(vocab, positions), "induction", steps=1, progress=False)
