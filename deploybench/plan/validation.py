"""Typed settings: strict, frozen pydantic models whose errors name the key that is wrong.

Every settings model derives from `Settings`: no coercion ("5" is not 5, true is not 1), unknown
keys refused, frozen once built. An optional key that may not be null is declared with its type
and a `None` default (pydantic does not validate defaults): given, it must have that type; left
out, it reads None. A check one field cannot make alone (a cross-reference, a file that must exist)
raises `Invalid(loc, why)` in a model validator, naming the key below that model; `describe` turns
any validation failure into lines `<root>.<dotted.key.path>: <why>`.
"""

from __future__ import annotations

from typing import Annotated, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Strict, ValidationError

T = TypeVar("T")

# YAML and JSON give enumeration values as text; strict mode alone would demand enum instances.
Choice = Annotated[T, Strict(False)]

_MAX_SHOWN = 80  # characters of a wrong value quoted back in a message


class Settings(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, use_attribute_docstrings=True)


class Invalid(ValueError):
    """A check failed at `loc`: a key (or key path) below the model whose validator raised it."""

    def __init__(self, loc: str | tuple[str | int, ...], why: str):
        self.loc = (loc,) if isinstance(loc, str) else tuple(loc)
        self.why = why
        super().__init__(why)


def describe(error: ValidationError, root: str, model: type[BaseModel]) -> str:
    """One line per problem, `<root>.<key path>: <why>`, list indices as `[i]`."""
    return "\n".join(_line(detail, root, model) for detail in error.errors())


def _line(detail: dict, root: str, model: type[BaseModel]) -> str:
    loc = list(detail["loc"])
    cause = (detail.get("ctx") or {}).get("error")
    if isinstance(cause, Invalid):
        return f"{key_path(root, [*loc, *cause.loc])}: {cause.why}"
    kind = detail["type"]
    if kind == "missing":
        why = "required"
    elif kind == "extra_forbidden":
        known = _field_names(model, loc[:-1])
        why = f"unknown key (known: {', '.join(known)})" if known else "unknown key"
    elif loc and loc[-1] == "[key]":
        loc.pop()  # the name itself is wrong, not a value under it
        why = f"not a valid name ({detail['msg']})"
    else:
        why = f"{detail['msg'].removeprefix('Value error, ')}, got {_shown(detail.get('input'))}"
    return f"{key_path(root, loc)}: {why}"


def key_path(root: str, loc) -> str:
    path = root
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _field_names(model: type[BaseModel], loc: list) -> list[str]:
    """The keys the settings model at `loc` (below `model`) knows, for an unknown-key message."""
    node = model
    for part in loc:
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(part)
            node = field.annotation if field is not None else None
        else:  # a mapping, list or optional: `part` is a key or an index, the value type follows
            args = [arg for arg in get_args(node) if arg is not type(None)]
            node = args[-1] if args else None
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    args = [arg for arg in get_args(node) if isinstance(arg, type) and issubclass(arg, BaseModel)]
    return list(args[0].model_fields) if args else []
