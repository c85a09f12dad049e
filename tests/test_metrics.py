"""The metric kind and the built-in metrics: each figure equals a hand computation on fixed outputs,
and summing the states of two shares equals computing on the whole (the DDP reduction law)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
import torch.distributed as dist

from mlrun.builtins import metrics as builtin
from mlrun.descriptor_checks import descriptor_problems
from mlrun.distributed import Group
from mlrun.metrics import (
    NEEDS,
    Metric,
    as_probabilities,
    compute_all,
    metric_labels,
    metric_problems,
    mode_of,
    reduce_states,
)

# Five classes. Class 1 is never predicted, class 2 occurs nowhere, class 4 is predicted but
# never true. Rows list each sample's classes from the highest score down.
LABELS = [0, 0, 0, 1, 1, 1, 3, 3]
RANKED = [
    [0, 1, 2, 3, 4],
    [0, 3, 1, 2, 4],
    [4, 0, 1, 2, 3],  # true 0: second
    [0, 1, 2, 3, 4],  # true 1: second
    [0, 2, 1, 3, 4],  # true 1: third
    [0, 3, 4, 2, 1],  # true 1: last
    [3, 0, 1, 2, 4],
    [0, 1, 3, 2, 4],  # true 3: third
]
C = 5


def scores() -> torch.Tensor:
    """Distinct scores per row, highest for the first class of RANKED."""
    out = torch.zeros(len(RANKED), C)
    for row, ranked in enumerate(RANKED):
        for place, cls in enumerate(ranked):
            out[row, cls] = float(C - place) + 0.25 * row  # an offset: rows differ, order stays
    return out


def labels() -> torch.Tensor:
    return torch.tensor(LABELS)


def figure(name: str, rows: slice = slice(None), batch: int = 3, **params) -> object:
    """The metric's value over the given rows, fed in batches of ``batch``."""
    metric = make(name, **params)
    s, y = scores()[rows], labels()[rows]
    for start in range(0, len(y), batch):
        metric.update(s[start : start + batch], y[start : start + batch])
    return metric.compute(metric.state())


def make(name: str, **params):
    factory = {m.name: m for m in builtin.register_metrics()}[name].factory
    if name != "accuracy":
        params.setdefault("num_classes", C)
    return factory(**params)


# ---------------------------------------------------------------- each figure, by hand

PREDICTED = [ranked[0] for ranked in RANKED]  # [0, 0, 4, 0, 0, 0, 3, 0]


def test_accuracy_is_hits_over_samples() -> None:
    hits = sum(p == t for p, t in zip(PREDICTED, LABELS))
    assert hits == 3
    assert figure("accuracy") == pytest.approx(3 / 8)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_top_k_accuracy_counts_the_true_class_among_the_k_best(k: int) -> None:
    expected = sum(t in ranked[:k] for ranked, t in zip(RANKED, LABELS)) / len(LABELS)
    assert figure("top_k_accuracy", k=k) == pytest.approx(expected)
    assert figure("top_k_accuracy", k=2) == pytest.approx(5 / 8)  # rows 0, 1, 2, 3, 6


def test_the_confusion_matrix_counts_true_by_predicted_class() -> None:
    expected = [[0] * C for _ in range(C)]
    for t, p in zip(LABELS, PREDICTED):
        expected[t][p] += 1
    assert figure("confusion_matrix") == expected
    assert expected[1] == [3, 0, 0, 0, 0] and expected[2] == [0] * C  # never predicted / absent


def test_per_class_accuracy_is_each_class_recall_and_none_without_samples() -> None:
    assert figure("per_class_accuracy") == pytest.approx([2 / 3, 0.0, None, 1 / 2, None])


def test_macro_f1_averages_the_classes_in_labels_or_predictions() -> None:
    # F1 = 2TP / (true + predicted): class 0: 2*2/(3+6); class 1 (never predicted): 0;
    # class 2 (nowhere): left out; class 3: 2*1/(2+1); class 4 (only predicted): 0.
    expected = (Fraction(4, 9) + 0 + Fraction(2, 3) + 0) / 4
    assert expected == Fraction(5, 18)
    assert figure("macro_f1") == pytest.approx(float(expected), abs=1e-15)


def test_balanced_accuracy_averages_the_recall_of_the_classes_in_the_labels() -> None:
    # classes 0, 1, 3 have samples; class 4 (only predicted) and class 2 (nowhere) are left out
    expected = (Fraction(2, 3) + 0 + Fraction(1, 2)) / 3
    assert figure("balanced_accuracy") == pytest.approx(float(expected), abs=1e-15)


def test_a_tie_goes_to_the_first_class_as_torch_argmax_for_every_k() -> None:
    tied, second = torch.tensor([[1.0, 1.0, 1.0, 0.0]]), torch.tensor([1])
    for name, params, expected in [("accuracy", {}, 0.0), ("top_k_accuracy", {"k": 1}, 0.0),
                                   ("top_k_accuracy", {"k": 2, "num_classes": 4}, 1.0)]:  # fmt: skip
        metric = make(name, **params)
        metric.update(tied, second)
        assert metric.compute(metric.state()) == expected, (name, params)
    k2 = make("top_k_accuracy", k=2, num_classes=4)
    k2.update(tied, torch.tensor([2]))  # classes 0 and 1 come first
    assert k2.compute(k2.state()) == 0.0


def test_top_1_accuracy_is_accuracy_on_random_scores_with_ties() -> None:
    g = torch.Generator().manual_seed(0)
    s, y = torch.randint(0, 3, (500, 5), generator=g).float(), torch.randint(0, 5, (500,), generator=g)
    a, k1 = make("accuracy"), make("top_k_accuracy", k=1)
    ranked = s.argsort(dim=-1, descending=True, stable=True)  # ties: the lower index first
    by_hand = [make("top_k_accuracy", k=k) for k in (2, 3)]
    for m in (a, k1, *by_hand):
        m.update(s, y)
    assert a.compute(a.state()) == k1.compute(k1.state())
    for k, m in zip((2, 3), by_hand):
        expected = (ranked[:, :k] == y.unsqueeze(1)).any(dim=1).double().mean().item()
        assert m.compute(m.state()) == pytest.approx(expected)


def test_an_empty_evaluation_gives_nan_and_no_per_class_values() -> None:
    for name in ("accuracy", "top_k_accuracy", "macro_f1", "balanced_accuracy"):
        metric = make(name)
        assert math.isnan(metric.compute(metric.state())), name
    assert figure("per_class_accuracy", rows=slice(0, 0)) == [None] * C


def test_reset_forgets_every_batch() -> None:
    for name in ("accuracy", "confusion_matrix"):
        metric = make(name)
        metric.update(scores(), labels())
        metric.reset()
        metric.update(scores()[:2], labels()[:2])
        assert metric.compute(metric.state()) == figure(name, rows=slice(0, 2))


def test_top_k_refuses_more_classes_than_the_model_has() -> None:
    with pytest.raises(ValueError, match=r"k = 6 is more than the model's 5 classes: choose k <= 5"):
        make("top_k_accuracy", k=6)


# ---------------------------------------------------------------- the DDP reduction law

ALL = ["accuracy", "top_k_accuracy", "macro_f1", "balanced_accuracy", "per_class_accuracy", "confusion_matrix"]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("cut", [0, 3, 5])
def test_summed_states_of_two_shares_equal_the_whole(name: str, cut: int) -> None:
    """cut = 0: one rank saw nothing (a test split smaller than the world); its zeros add nothing."""
    shares = [make(name), make(name)]
    shares[0].update(scores()[:cut], labels()[:cut])
    shares[1].update(scores()[cut:], labels()[cut:])
    first, second = (share.state() for share in shares)
    assert first.keys() == second.keys()
    assert all(first[key].shape == second[key].shape for key in first)  # every rank: the same shapes
    summed = {key: first[key] + second[key] for key in first}
    assert shares[0].compute(summed) == figure(name)


def test_states_are_integer_counts_that_add_exactly() -> None:
    for name in ALL:
        metric = make(name)
        metric.update(scores(), labels())
        assert all(not t.is_floating_point() for t in metric.state().values()), name


def test_without_a_group_the_states_are_the_local_ones() -> None:
    metric = make("confusion_matrix")
    metric.update(scores(), labels())
    [state] = reduce_states([metric], None)
    assert state["matrix"] is metric.state()["matrix"]
    named = {"accuracy": make("accuracy"), "macro_f1": make("macro_f1")}
    for metric in named.values():
        metric.update(scores(), labels())
    assert compute_all(named) == {"accuracy": figure("accuracy"), "macro_f1": figure("macro_f1")}


def test_the_all_reduce_packs_and_unpacks_every_state() -> None:
    """One collective for all metrics: in a real world of one rank the sum is the state itself,
    so what comes back must equal what went in (shape, dtype, values)."""
    assert not dist.is_initialized(), "another test left a process group behind"
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        metrics = [make(name) for name in ALL]
        for metric in metrics:
            metric.update(scores(), labels())
        two_ranks = Group(rank=0, world_size=2, local_rank=0, backend="gloo")  # takes the collective path
        reduced = reduce_states(metrics, two_ranks)
    finally:
        dist.destroy_process_group()
    for metric, state in zip(metrics, reduced):
        local = metric.state()
        for key in local:
            assert state[key].dtype == local[key].dtype and torch.equal(state[key], local[key])


def test_a_group_without_torch_distributed_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="torch.distributed is not initialised"):
        reduce_states([make("accuracy")], Group(rank=0, world_size=2, local_rank=0, backend="gloo"))


# ---------------------------------------------------------------- the descriptor


def test_the_metric_kind_is_declared_as_data() -> None:
    assert (Metric.kind, Metric.hook, Metric.section) == ("metric", "register_metrics", "metrics")
    assert Metric.many and not Metric.required
    assert Metric.optional_injected == {"num_classes"} and not Metric.injected


def test_the_built_ins_are_sound_descriptors() -> None:
    found = builtin.register_metrics()
    assert [m.name for m in found] == ALL
    for metric in found:
        assert descriptor_problems(metric) == [], metric.name
        assert metric_problems(metric, {}) == [], metric.name
        assert metric.higher_is_better and metric.needs == "scores"
        assert mode_of(metric) == "max"
    stored = {m.name for m in found if not m.scalar}
    assert stored == {"per_class_accuracy", "confusion_matrix"}


def test_a_bad_metric_descriptor_is_explained() -> None:
    bad = Metric("loss", builtin.accuracy, "x", higher_is_better="yes", needs="prob", scalar=1)  # type: ignore[arg-type]
    problems = metric_problems(bad, {})
    assert "higher_is_better must be True or False, got 'yes'" in problems
    assert "scalar must be True or False, got 1" in problems
    assert any(p.startswith("needs must be 'scores'") and "did you mean 'probs'" in p for p in problems)
    assert any("taken by the loss column" in p for p in problems)
    assert NEEDS == ("scores", "probs")


def test_a_lower_is_better_metric_is_minimised() -> None:
    assert mode_of(Metric("error_rate", builtin.accuracy, "x", higher_is_better=False)) == "min"


# ---------------------------------------------------------------- helpers for the engine


def test_probabilities_from_every_output_kind() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    probs = logits.softmax(dim=-1)
    assert torch.allclose(as_probabilities(logits, "logits"), probs)
    assert torch.allclose(as_probabilities(probs.log(), "log_probs"), probs)
    assert as_probabilities(probs, "probs") is probs
    with pytest.raises(ValueError, match="unknown model output kind 'logit'"):
        as_probabilities(logits, "logit")


def test_repeated_metrics_get_labels_with_their_parameters() -> None:
    entries = [("accuracy", {}), ("top_k_accuracy", {"k": 1}), ("top_k_accuracy", {"k": 5})]
    assert metric_labels(entries) == ["accuracy", "top_k_accuracy_k1", "top_k_accuracy_k5"]
    assert metric_labels([("top_k_accuracy", {"k": 5})]) == ["top_k_accuracy"]
