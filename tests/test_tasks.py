"""Synthetic tasks: layouts, labels, splits, accuracy and the registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tscope_widgets.tasks import (
    IGNORE_INDEX,
    TASKS,
    AdditionTask,
    InductionTask,
    ModularAdditionTask,
    get_task,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def one_hot_logits(next_tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    """Logits ``[N, S, V]`` whose argmax at position t is ``next_tokens[:, t]``."""
    return torch.nn.functional.one_hot(next_tokens.clamp_min(0), vocab).double()


# ---------------------------------------------------------------------------------- induction
def test_induction_fixed_layout():
    task = InductionTask(num_symbols=20, k_max=6)
    batch = task.sample(50, gen())
    ids, labels = batch["input_ids"], batch["labels"]
    assert ids.shape == labels.shape == (50, 13) and ids.dtype == labels.dtype == torch.long
    assert (ids[:, 0] == task.bos).all()
    first, second = ids[:, 1:7], ids[:, 7:13]
    assert torch.equal(first, second)
    assert (first < 20).all() and (first >= 0).all()
    # Distinct symbols within a segment: each earlier occurrence is unique.
    assert (first.sort(dim=1).values.diff(dim=1) > 0).all()
    # Labels: targets r_2 … r_k at positions k + 2 … 2k, nothing else.
    expected = torch.full_like(ids, IGNORE_INDEX)
    expected[:, 8:13] = ids[:, 8:13]
    assert torch.equal(labels, expected)


def test_induction_variable_lengths_pad_and_label():
    task = InductionTask(num_symbols=16, k_max=8, k_min=3)
    ids, labels = task.sample(400, gen(1)).values()
    assert ids.shape == (400, 17)
    ks = ((ids != task.pad).sum(1) - 1) // 2
    assert set(ks.tolist()) == set(range(3, 9))
    for row, k in zip(ids, ks.tolist(), strict=True):
        assert torch.equal(row[1 : k + 1], row[k + 1 : 2 * k + 1])
        assert (row[2 * k + 1 :] == task.pad).all()
    n_labelled = (labels != IGNORE_INDEX).sum(1)
    assert torch.equal(n_labelled, ks - 1)
    assert (labels[ids == task.pad] == IGNORE_INDEX).all()


def test_induction_labels_are_what_an_induction_rule_predicts():
    """Predict 'the token after the earlier occurrence of the current token': accuracy 1 exactly."""
    task = InductionTask(num_symbols=12, k_max=7, k_min=2)
    ids, labels = task.sample(300, gen(2)).values()
    N, S = ids.shape
    t = torch.arange(S)
    same = ids[:, :, None] == ids[:, None, :]  # [N, t, u]
    earlier = same & (t[None, None, :] < t[None, :, None]) & (ids[:, :, None] < task.num_symbols)
    has_prev = earlier.any(-1)
    prev_pos = torch.where(earlier, t, -1).amax(-1)  # last earlier occurrence
    pred = ids.gather(1, (prev_pos + 1).clamp(0, S - 1))
    pred = torch.where(has_prev, pred, task.pad)
    assert task.accuracy(one_hot_logits(pred, task.vocab_size), labels) == 1.0
    # The same rule shifted by one position is wrong everywhere.
    assert task.accuracy(one_hot_logits(pred.roll(1, dims=1), task.vocab_size), labels) < 0.2


def test_induction_seeded_and_fixed_k():
    task = InductionTask(num_symbols=10, k_max=5, k_min=2)
    a, b = task.sample(8, gen(3)), task.sample(8, gen(3))
    assert torch.equal(a["input_ids"], b["input_ids"])
    fixed = task.sample(8, gen(4), k=3)["input_ids"]
    assert ((fixed != task.pad).sum(1) == 7).all()
    with pytest.raises(ValueError, match="exceeds k_max"):
        task.sample(2, gen(), k=6)
    with pytest.raises(ValueError, match="k must be >= 2"):
        task.sample(2, gen(), k=1)


def test_induction_labels_text():
    task = InductionTask(num_symbols=10, k_max=3)
    assert task.token_labels(torch.tensor([10, 3, 11])) == ["BOS", "t3", "PAD"]
    assert task.role_labels() == ["BOS", "r1", "r2", "r3", "copy r1", "copy r2", "copy r3"]
    assert task.role_labels(2)[-3:] == ["copy r2", "PAD", "PAD"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_symbols": 4, "k_max": 6}, ValueError, "exceeds num_symbols"),
        ({"k_max": 4, "k_min": 5}, ValueError, "k_min=5 exceeds"),
        ({"k_max": 3.0}, TypeError, "k_max must be an int"),
        ({"num_symbols": 1}, ValueError, "num_symbols must be >= 2"),
    ],
)
def test_induction_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        InductionTask(**kwargs)


# ---------------------------------------------------------------------------------- modular addition
def test_modadd_sequences_and_labels():
    task = ModularAdditionTask(p=7, train_fraction=0.5)
    ids, labels = task.sample(100, gen()).values()
    assert ids.shape == (100, 4)
    assert torch.equal(ids[:, 3], (ids[:, 0] + ids[:, 1]) % 7)
    assert (ids[:, 2] == task.equals).all()
    assert (labels[:, :3] == IGNORE_INDEX).all() and torch.equal(labels[:, 3], ids[:, 3])
    assert task.token_labels(ids[0]) == [
        str(ids[0, 0].item()),
        str(ids[0, 1].item()),
        "=",
        str(ids[0, 3].item()),
    ]


def test_modadd_split_is_a_partition_fixed_by_its_seed():
    task = ModularAdditionTask(p=11, train_fraction=0.3, split_seed=5)
    train = {tuple(x) for x in task.train_pairs.tolist()}
    test = {tuple(x) for x in task.test_pairs.tolist()}
    assert not train & test and len(train | test) == 121
    assert len(train) == round(0.3 * 121)
    assert torch.equal(
        ModularAdditionTask(p=11, train_fraction=0.3, split_seed=5).test_pairs, task.test_pairs
    )
    sampled = {tuple(x) for x in task.sample(200, gen(), split="test")["input_ids"][:, :2].tolist()}
    assert sampled <= test
    assert torch.equal(task.held_out()["input_ids"][:, :2], task.test_pairs)
    with pytest.raises(ValueError, match="unknown split"):
        task.sample(3, gen(), split="val")


def test_modadd_rejects_bad_arguments():
    with pytest.raises(ValueError, match="train_fraction"):
        ModularAdditionTask(p=5, train_fraction=1.0)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        ModularAdditionTask(p=5).encode(torch.tensor([[1, 5]]))


# ---------------------------------------------------------------------------------- accuracy, registry
def test_accuracy_counts_only_labelled_positions():
    task = ModularAdditionTask(p=5)
    batch = task.sample(40, gen())
    ids, labels = batch["input_ids"], batch["labels"]
    right = one_hot_logits(ids.roll(-1, dims=1), task.vocab_size)
    assert task.accuracy(right, labels) == 1.0
    wrong = one_hot_logits((ids.roll(-1, dims=1) + 1) % 5, task.vocab_size)
    half = torch.where(torch.arange(40)[:, None, None] < 10, right, wrong)
    assert task.accuracy(half, labels) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no position carries a label"):
        task.accuracy(right, torch.full_like(labels, IGNORE_INDEX))
    with pytest.raises(ValueError, match="expected logits"):
        task.accuracy(right[:, :2], labels)


def test_registry():
    assert set(TASKS) == {"induction", "modadd", "addition"}
    task = get_task("induction", k_max=5, num_symbols=9)
    assert isinstance(task, InductionTask) and task.seq_len == 11 and task.vocab_size == 11
    assert get_task(task) is task
    assert isinstance(get_task(task.name, **task.config()), InductionTask)
    with pytest.raises(ValueError, match=r"unknown task 'copy'; available: \['addition', 'induction', 'modadd'\]"):
        get_task("copy")
    with pytest.raises(ValueError, match="unexpected keyword"):
        get_task("modadd", q=3)


# ---------------------------------------------------------------------------------- addition
def test_addition_format_and_labels():
    task = get_task("addition")
    assert (task.vocab_size, task.seq_len) == (12, 18)
    batch = task.sample(500, gen(0))
    ids, labels = batch["input_ids"], batch["labels"]
    assert ids.shape == labels.shape == (500, 18) and ids.dtype == torch.long
    assert (ids[:, 5] == 10).all() and (ids[:, 11] == 11).all()
    digits = torch.cat([ids[:, :5], ids[:, 6:11], ids[:, 12:]], 1)
    assert ((digits >= 0) & (digits <= 9)).all()
    powers = 10 ** torch.arange(5, -1, -1)

    def number(d):
        return (d * powers[-d.shape[1]:]).sum(1)

    assert torch.equal(number(ids[:, 12:]), number(ids[:, :5]) + number(ids[:, 6:11]))
    assert torch.equal(labels[:, :12], torch.full((500, 12), IGNORE_INDEX))
    assert torch.equal(labels[:, 12:], ids[:, 12:])
    text = "".join(task.token_labels(task.encode(torch.tensor([33357]), torch.tensor([82243]))["input_ids"][0]))
    assert text == "33357+82243=115600"
    assert "".join(task.token_labels(task.encode(torch.tensor([7]), torch.tensor([5]))["input_ids"][0])) == (
        "00007+00005=000012")
    with pytest.raises(ValueError, match=r"operands must lie in \[0, 100000\)"):
        task.encode(torch.tensor([100000]), torch.tensor([1]))


def test_addition_carry_forcing_rates():
    """20% of batches enriched; in those, 20% of digit pairs forced to sum to 9 (plus the natural 10%)."""
    task = AdditionTask()
    g = gen(1)
    fractions = []
    for _ in range(400):
        ids = task.sample(500, g)["input_ids"]
        fractions.append((ids[:, :5] + ids[:, 6:11] == 9).double().mean().item())
    f = torch.tensor(fractions)
    enriched = f > 0.19  # natural rate 0.1, enriched 0.2 + 0.8 * 0.1 = 0.28; sd per batch about 0.006
    assert ((f - 0.1).abs() < 0.04)[~enriched].all() and ((f - 0.28).abs() < 0.04)[enriched].all()
    n = enriched.sum().item()
    assert abs(n - 80) < 3 * (400 * 0.2 * 0.8) ** 0.5
    assert f[enriched].mean().item() == pytest.approx(0.28, abs=0.005)
    assert f[~enriched].mean().item() == pytest.approx(0.10, abs=0.003)
    forced = task.sample(4000, gen(2), force=True)["input_ids"]
    assert (forced[:, :5] + forced[:, 6:11] == 9).double().mean().item() == pytest.approx(0.28, abs=0.01)
    plain = AdditionTask(force_batch_prob=0.0).sample(4000, gen(2))["input_ids"]
    assert (plain[:, :5] + plain[:, 6:11] == 9).double().mean().item() == pytest.approx(0.10, abs=0.01)
    # enrichment makes long carry cascades (the point of it): 99999-type pairs are common only when forced
    def all_nine(i):
        return (i[:, :5] + i[:, 6:11] == 9).all(1).double().mean().item()

    assert all_nine(AdditionTask(force_pair_prob=1.0).sample(100, gen(3), force=True)["input_ids"]) == 1.0
    with pytest.raises(ValueError, match="force_pair_prob must be a probability"):
        AdditionTask(force_pair_prob=1.5)


def test_addition_losses_read_the_answer_positions():
    task = AdditionTask()
    batch = task.sample(64, gen(4))
    ids = batch["input_ids"]
    g = gen(5)
    logits = torch.randn(64, 18, 12, generator=g, dtype=torch.float64)
    # reference written out: logits at t = 11 … 16 predict the tokens at t + 1 = 12 … 17
    ce = torch.stack([F.cross_entropy(logits[:, t], ids[:, t + 1]) for t in range(11, 17)]).mean()
    assert task.loss(logits, batch) == pytest.approx(ce.item(), rel=1e-13)
    onehot = F.one_hot(ids[:, 12:], 12).double()
    mse = ((logits[:, 11:17] - onehot) ** 2).sum() / 64
    assert task.loss(logits, batch, kind="mse") == pytest.approx(mse.item(), rel=1e-13)
    # the same as the label convention of ModelAdapter.loss (logits at t - 1 against labels[:, t])
    lm = F.cross_entropy(logits[:, :-1].reshape(-1, 12), batch["labels"][:, 1:].reshape(-1), ignore_index=-100)
    assert task.loss(logits, batch) == pytest.approx(lm.item(), rel=1e-13)
    # changing a logit outside the answer positions changes neither loss; inside, both
    moved = logits.clone()
    moved[:, :11] += 5.0
    moved[:, 17] += 5.0
    assert task.loss(moved, batch) == task.loss(logits, batch)
    assert task.loss(moved, batch, kind="mse") == task.loss(logits, batch, kind="mse")
    moved[:, 16, 3] += 1.0
    assert task.loss(moved, batch) != task.loss(logits, batch)
    # perfect logits: the MSE is 0 and the accuracy 1
    perfect = torch.zeros(64, 18, 12, dtype=torch.float64)
    perfect[:, 11:17] = onehot
    assert task.loss(perfect, batch, kind="mse").item() == 0.0
    assert task.accuracy(perfect, batch["labels"]) == 1.0
    with pytest.raises(ValueError, match=r"expected logits \[N, 18, 12\]"):
        task.loss(logits[:, :17], batch)
    with pytest.raises(ValueError, match="kind must be 'ce' or 'mse'"):
        task.loss(logits, batch, kind="l1")
