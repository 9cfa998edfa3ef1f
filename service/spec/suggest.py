"""Hints for a refused request body: the closest known field or value, and which other
`type`s of a discriminated union take a field that the given one does not.

The model classes are walked along the path of the offending field in the body, so a union
(a layer, an optimizer, a data set) is resolved by the `type` the body gives at that point.
"""

import difflib
import re
import types
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

MAX_ECHO = 100  # never repeat more of the user's input than this in a message


def short(text: str) -> str:
    """`text` cut to MAX_ECHO characters (an ellipsis marks the cut)."""
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "..."


def closest(word: str, choices: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(word[: MAX_ECHO * 2], list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def quoted(expected: str) -> list[str]:
    """The values in pydantic's `'a', 'b' or 'c'` (ctx of literal and union-tag errors)."""
    return re.findall(r"'([^']*)'", expected)


def _alternatives(tp: Any) -> list[Any]:
    """The alternatives of a type: Annotated unwrapped, unions (and Optional) flattened."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _alternatives(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return [alt for arg in get_args(tp) for alt in _alternatives(arg)]
    return [tp]


def _models(tp: Any) -> list[type[BaseModel]]:
    return [a for a in _alternatives(tp) if isinstance(a, type) and issubclass(a, BaseModel)]


def _items(tp: Any) -> Any:
    for alt in _alternatives(tp):
        if get_origin(alt) in (list, tuple) and get_args(alt):
            return get_args(alt)[0]
    return None


def type_tag(model: type[BaseModel]) -> str | None:
    """The value of the model's `type` literal (its tag in a discriminated union), if any."""
    field = model.model_fields.get("type")
    if field is None or get_origin(field.annotation) is not Literal:
        return None
    tag = get_args(field.annotation)[0]
    return tag if isinstance(tag, str) else None


def _pick(models: list[type[BaseModel]], value: Any) -> type[BaseModel] | None:
    """The alternative that `value` (the body at this point) means."""
    if len(models) == 1:
        return models[0]
    if not isinstance(value, dict) or not models:
        return None
    for model in models:
        if value.get("type") is not None and type_tag(model) == value.get("type"):
            return model
    # untagged unions (the data set): the alternative that knows most of the given keys
    best = max(models, key=lambda m: len(value.keys() & m.model_fields.keys()))
    return best if value.keys() & best.model_fields.keys() else None


def _walk(root: type[BaseModel], body: Any, path: Sequence[str | int]) -> tuple[Any, Any]:
    """The declared type at `path` (a path into `body`) and the body's value there."""
    tp: Any = root
    value = body
    for part in path:
        if isinstance(part, int):
            tp = _items(tp)
        else:
            model = _pick(_models(tp), value)
            if model is None or part not in model.model_fields:
                return None, None
            tp = model.model_fields[part].annotation
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None, None
    return tp, value


def unknown_field(root: type[BaseModel], body: Any, path: Sequence[str | int]) -> str | None:
    """Why the last name of `path` is unknown there: a close field name, or the other types
    of the union that take it; None when the path cannot be followed."""
    *parent, name = path
    if not isinstance(name, str):
        return None
    tp, value = _walk(root, body, parent)
    models = _models(tp)
    model = _pick(models, value)
    if model is None:
        return None
    tag = type_tag(model)
    takers = [t for m in models if m is not model and name in m.model_fields if (t := type_tag(m))]
    if tag and takers:
        return f"{short(name)} is a field of {', '.join(takers)} (not {tag})"
    guess = closest(name, model.model_fields)
    if guess:
        return f"did you mean '{guess}'?"
    return f"expected one of: {', '.join(model.model_fields)}"
