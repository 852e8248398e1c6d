"""Give one module instance a different forward by moving it to a subclass of its own class.

transformers' layers keep their code in `forward`; deploybench changes what a few of them compute
(fused projections, a decode-only experts path) without copying the model. A subclass, not a bound
method on the instance, keeps isinstance checks and the hooks transformers attaches by class, and is
what torch.compile traces like any other module.
"""

from __future__ import annotations

import types

import torch

_SUBCLASSES: dict[tuple[type, str], type] = {}


def specialise(module: torch.nn.Module, tag: str, forward, shared: dict | None = None, **attributes) -> None:
    """Move `module` to a subclass named `<tag><its class>` whose forward is `forward`.

    The subclass is made once per class and tag, with `shared` as class attributes (functions in it
    are wrapped as static methods); `attributes` are set on this instance.
    """
    if tag_of(module) not in (None, tag):
        raise ValueError(f"{type(module).__name__} is already specialised as {tag_of(module)!r}")
    base = base_class(module)
    key = (base, tag)
    if key not in _SUBCLASSES:
        statics = {
            name: staticmethod(value) if isinstance(value, types.FunctionType) else value
            for name, value in (shared or {}).items()
        }
        _SUBCLASSES[key] = type(f"{tag}{base.__name__}", (base,), {"forward": forward, "swap_tag": tag, **statics})
    module.__class__ = _SUBCLASSES[key]
    for name, value in attributes.items():
        setattr(module, name, value)


def tag_of(module: torch.nn.Module) -> str | None:
    return getattr(type(module), "swap_tag", None)


def base_class(module: torch.nn.Module) -> type:
    """The transformers class under any specialisation."""
    cls = type(module)
    return cls.__mro__[1] if "swap_tag" in cls.__dict__ else cls
