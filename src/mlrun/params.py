"""Component parameters: read from the factory's signature, validated with pydantic.

The factory's keyword parameters (minus the ones the engine injects) are the
component's recipe parameters. Each must carry a type annotation; constraints go
in ``Annotated[...]`` with ``annotated_types`` or ``pydantic.Field`` metadata,
e.g. ``lr: Annotated[float, Gt(0)] = 0.01``. Validation is strict: the string
``"2"`` is never turned into the number ``2``. Floats must be finite (``inf`` and
``nan`` are refused, inside lists too) unless a parameter opts in with
``Annotated[float, pydantic.AllowInfNan(True)]``.
"""

from __future__ import annotations

import functools
import inspect
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import annotated_types
import pydantic

from mlrun.components import Component
from mlrun.errors import did_you_mean

REQUIRED: Any = inspect.Parameter.empty


class SignatureError(TypeError):
    """A component factory whose signature cannot describe recipe parameters."""


@dataclass(frozen=True)
class Parameter:
    """One recipe parameter of a component."""

    name: str
    annotation: Any
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        """True when the recipe must set this parameter."""
        return self.default is REQUIRED

    @property
    def type_text(self) -> str:
        """The parameter's type as a person reads it, constraints included (``float > 0``)."""
        return describe_type(self.annotation)


def parameters(component: Component) -> list[Parameter]:
    """The recipe parameters of a component, in signature order."""
    engine_supplied = component.injected | component.optional_injected
    params = _parameters(component.factory, engine_supplied, component.kind, component.name)
    missing = component.injected - set(inspect.signature(component.factory).parameters)
    if missing:
        raise SignatureError(
            f"{component.kind} {component.name!r}: the factory must accept the engine-supplied "
            f"argument(s) {', '.join(sorted(missing))}"
        )
    return list(params)


@functools.cache
def _parameters(factory: Any, injected: frozenset[str], kind: str, name: str) -> tuple[Parameter, ...]:
    where = f"{kind} {name!r}"
    try:
        signature = inspect.signature(factory)
        # For a class, the annotations that matter are those of __init__, not the class body.
        annotated = getattr(factory, "__init__") if isinstance(factory, type) else factory  # noqa: B009
        hints = typing.get_type_hints(annotated, include_extras=True)
    except (TypeError, ValueError, NameError) as exc:
        raise SignatureError(f"{where}: cannot read the factory's signature ({exc})") from exc
    result = []
    for param in signature.parameters.values():
        if param.name in injected:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise SignatureError(f"{where}: *args/**kwargs cannot be recipe parameters; name each parameter")
        if param.kind is param.POSITIONAL_ONLY:
            raise SignatureError(f"{where}: parameter {param.name!r} must accept a keyword")
        if param.name not in hints:
            raise SignatureError(
                f"{where}: parameter {param.name!r} has no type annotation; annotate it so recipes can be validated"
            )
        result.append(Parameter(param.name, hints[param.name], param.default))
    return tuple(result)


@functools.cache
def _model_for(component: Component) -> type[pydantic.BaseModel]:
    fields: dict[str, Any] = {}
    for p in parameters(component):
        fields[p.name] = (p.annotation, ... if p.required else p.default)
    return pydantic.create_model(
        f"{component.kind}_{component.name}_params",
        # allow_inf_nan=False: an lr or a mean of inf/nan validates but trains to garbage
        # (or to 10% accuracy with exit 0); a parameter that means it opts in per field.
        __config__=pydantic.ConfigDict(
            extra="forbid",
            strict=True,
            protected_namespaces=(),
            arbitrary_types_allowed=True,
            allow_inf_nan=False,
        ),
        **fields,
    )


def validate_params(component: Component, raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Validate recipe values for a component.

    Returns ``(values, problems)``: the values with defaults filled in, and a list of
    ``(key, message)`` problems (empty when everything is valid).
    """
    model = _model_for(component)
    # JSON mode keeps strictness (no "2" -> 2) while accepting TOML arrays for tuples.
    try:
        validated = model.model_validate_json(json.dumps(dict(raw), default=str))
    except pydantic.ValidationError as exc:
        accepted = [p.name for p in parameters(component)]
        problems = [_explain(component, err, raw, accepted) for err in exc.errors()]
        return {}, problems
    return {name: getattr(validated, name) for name in model.model_fields}, []


def _explain(
    component: Component, err: Mapping[str, Any], raw: Mapping[str, Any], accepted: list[str]
) -> tuple[str, str]:
    loc = [str(part) for part in err["loc"]]
    key = loc[0] if loc else ""
    subpath = ".".join(loc)
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        listing = ", ".join(accepted) if accepted else "none"
        return key, (
            f"unknown parameter for {component.kind} '{component.name}'"
            f"{did_you_mean(key, accepted)} (accepted: {listing})"
        )
    param = next((p for p in parameters(component) if p.name == key), None)
    expected = param.type_text if param else "a valid value"
    if kind == "missing" and len(loc) == 1:
        return key, f"required parameter of {component.kind} '{component.name}' is missing ({expected})"
    shown = raw.get(key) if len(loc) == 1 else value
    message = f"expected {expected}, got {format_value(shown)}"
    if kind.endswith("_type") or kind in ("missing", "too_short", "too_long"):
        if isinstance(shown, str) and looks_numeric(shown):
            message += f" — write it without quotes: {key} = {shown}"
        elif kind in ("list_type", "tuple_type") and isinstance(shown, (int, float, str)):
            message += f" — write it as a list: {key} = [{format_value(shown)}]"
        return subpath, message
    if kind == "literal_error" and isinstance(value, str) and param is not None:
        return subpath, message + did_you_mean(value, _literal_choices(param.annotation))
    # Constraint violations (greater_than, ...) and anything else: pydantic's own words.
    return subpath, f"{err['msg'].replace('Input should be', 'must be')}, got {format_value(value)}"


def looks_numeric(text: str) -> bool:
    """True for a string such as \"0.01\" that was meant as a number."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def format_value(value: Any) -> str:
    """A recipe value as it would be written in TOML (strings quoted, lists bracketed)."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "a table"
    return repr(value)


def _literal_choices(annotation: Any) -> list[str]:
    base, _ = _split_annotated(annotation)
    if typing.get_origin(base) is typing.Literal:
        return [str(a) for a in typing.get_args(base)]
    return []


def _split_annotated(annotation: Any) -> tuple[Any, list[Any]]:
    if typing.get_origin(annotation) is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        return base, metadata
    return annotation, []


_CONSTRAINTS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _constraint_text(meta: Any) -> list[str]:
    texts = []
    for attr, symbol in _CONSTRAINTS:
        bound = getattr(meta, attr, None)
        if bound is not None:
            texts.append(f"{symbol} {bound}")
    if isinstance(meta, annotated_types.MinLen) and meta.min_length > 0:
        texts.append("non-empty" if meta.min_length == 1 else f"at least {meta.min_length} items")
    if isinstance(meta, annotated_types.MaxLen):
        texts.append(f"at most {meta.max_length} items")
    # pydantic.Field(...) keeps its constraints in .metadata
    for inner in getattr(meta, "metadata", ()) or ():
        texts.extend(_constraint_text(inner))
    return texts


def describe_type(annotation: Any) -> str:
    """Render a type annotation for people: ``list[float]``, ``'relu' | 'tanh'``, ``float > 0``."""
    base, metadata = _split_annotated(annotation)
    text = _describe_base(base)
    constraints = [t for meta in metadata for t in _constraint_text(meta)]
    return f"{text} ({', '.join(constraints)})" if constraints else text


def _describe_base(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "none"
    if origin is typing.Literal:
        return " | ".join(format_value(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(describe_type(a) for a in args if a is not type(None))
    if origin in (list, tuple, set, frozenset):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return "[" + ", ".join(describe_type(a) for a in args) + "]"
        return f"list[{describe_type(args[0])}]" if args else "list"
    if isinstance(tp, type):
        return {"str": "string", "float": "number", "int": "integer", "bool": "boolean"}.get(tp.__name__, tp.__name__)
    return str(tp)


def to_jsonable(value: Any) -> Any:
    """Convert a validated value to plain lists/strings/numbers (for TOML and JSON output)."""
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: to_jsonable(v) for k, v in value.items()}
    return value
