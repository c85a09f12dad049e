"""Component parameters come from the factory's typed signature and are validated strictly."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from annotated_types import Gt

from mlrun import Model, Optimizer
from mlrun.params import SignatureError, describe_type, parameters, validate_params


def typed(width: Annotated[int, Gt(0)] = 8, act: Literal["relu", "tanh"] = "relu", scale: float = 1.0):
    """A factory with typed parameters."""


MODEL = Model("typed", typed, "test model")


def test_parameters_come_from_the_signature() -> None:
    params = parameters(MODEL)
    assert [(p.name, p.type_text, p.default) for p in params] == [
        ("width", "integer (> 0)", 8),
        ("act", '"relu" | "tanh"', "relu"),
        ("scale", "number", 1.0),
    ]


def test_injected_arguments_are_not_recipe_parameters() -> None:
    def opt(params, lr: float = 0.1):
        """An optimizer factory."""

    assert [p.name for p in parameters(Optimizer("o", opt, "x"))] == ["lr"]


def test_injected_argument_must_be_accepted() -> None:
    def opt(lr: float = 0.1):
        """Forgot params."""

    with pytest.raises(SignatureError, match="params"):
        parameters(Optimizer("bad_opt", opt, "x"))


def test_untyped_parameter_is_refused() -> None:
    def untyped(width=3):
        """No annotation."""

    with pytest.raises(SignatureError, match="no type annotation"):
        parameters(Model("untyped", untyped, "x"))


def test_kwargs_are_refused() -> None:
    def loose(**kwargs: int):
        """Anything goes."""

    with pytest.raises(SignatureError, match="kwargs"):
        parameters(Model("loose", loose, "x"))


def test_defaults_are_filled_in() -> None:
    values, problems = validate_params(MODEL, {"width": 4})
    assert problems == []
    assert values == {"width": 4, "act": "relu", "scale": 1.0}


def test_int_is_accepted_for_float() -> None:
    values, problems = validate_params(MODEL, {"scale": 2})
    assert problems == [] and values["scale"] == 2.0


@pytest.mark.parametrize(
    ("raw", "key", "fragment"),
    [
        ({"width": "2"}, "width", 'expected integer (> 0), got "2" — write it without quotes: width = 2'),
        ({"width": 2.0}, "width", "expected integer (> 0), got 2.0"),
        ({"width": True}, "width", "expected integer (> 0), got true"),
        ({"width": 0}, "width", "must be greater than 0, got 0"),
        ({"act": "rleu"}, "act", "did you mean 'relu'?"),
        ({"widht": 3}, "widht", "did you mean 'width'? (accepted: width, act, scale)"),
    ],
)
def test_bad_values_are_explained(raw: dict, key: str, fragment: str) -> None:
    values, problems = validate_params(MODEL, raw)
    assert values == {}
    assert len(problems) == 1
    assert problems[0][0] == key
    assert fragment in problems[0][1]


def test_all_problems_are_reported_at_once() -> None:
    _, problems = validate_params(MODEL, {"width": "x", "act": 3, "nope": 1})
    assert sorted(key for key, _ in problems) == ["act", "nope", "width"]


def test_tuples_accept_toml_arrays() -> None:
    def opt(params, betas: tuple[float, float] = (0.9, 0.999)):
        """Adam-like."""

    component = Optimizer("tupled", opt, "x")
    values, problems = validate_params(component, {"betas": [0.8, 0.9]})
    assert problems == [] and values["betas"] == (0.8, 0.9)
    _, problems = validate_params(component, {"betas": [0.8]})
    assert problems and problems[0][0].startswith("betas")


def test_describe_type_reads_like_toml() -> None:
    assert describe_type(list[float]) == "list[number]"
    assert describe_type(Annotated[float, Gt(0)]) == "number (> 0)"
    assert describe_type(tuple[int, str]) == "[integer, string]"
