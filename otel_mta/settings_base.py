"""Typed, validated settings classes with pydantic's syntax, for config.py.

config.py declares its settings as pydantic models did (annotated fields,
`Field(ge=...)`, `BeforeValidator`, `Literal`, nested models,
`model_validator`), and this module validates them. Why not pydantic itself:
it was a third of the idle sidecar's memory (~18 MiB of ~73: its schema
machinery, loaded with the first model; bench/footprint.py --imports) to
check ~70 settings once at start. What config.py uses is small, and this is
all of it:

- field types: int, float, str, bool, Path, Any, Literal[...], X | None (and
  other unions, tried in order), list[T], dict[K, V], tuple[A, B], and
  models; lax like pydantic's ("12" is an int, 2.0 is 2, "1.5" a float; a
  str must be a str);
- Annotated metadata: BeforeValidator(f) (run before the type check; a
  ValueError is the message) and Field(ge/gt/le/lt) (checked after it);
- defaults, Field(default_factory=...); `model_config = ConfigDict(extra=
  "forbid", frozen=True)`; `@model_validator(mode="after")`;
- errors as pydantic reports them: ValidationError.errors() with `loc`,
  `msg`, `type`, `input` (the same messages, so config.py words them alike);
- model_validate(), model_copy(update=), model_fields, ==, hash, repr.
"""
from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

_UNSET = object()


class BeforeValidator:
    """Annotated metadata: `func(value)` runs before the type is checked."""

    __slots__ = ("func",)

    def __init__(self, func):
        self.func = func


class Field:
    """A field's default (or default_factory) and bounds; also Annotated metadata."""

    __slots__ = ("default", "default_factory", "ge", "gt", "le", "lt")

    def __init__(self, default=_UNSET, *, default_factory=None, ge=None, gt=None, le=None, lt=None):
        self.default, self.default_factory = default, default_factory
        self.ge, self.gt, self.le, self.lt = ge, gt, le, lt


def ConfigDict(**options) -> dict:  # noqa: N802 - pydantic's name
    return options


def model_validator(*, mode: str):
    """`@model_validator(mode="after")`: a method run on the validated
    instance; it returns the instance, or raises ValueError."""
    if mode != "after":
        raise ValueError("only mode='after' is supported")

    def mark(fn):
        fn._model_validator = True
        return fn
    return mark


class ValidationError(ValueError):
    def __init__(self, title: str, errors: list[dict]):
        self._errors = errors
        first = errors[0]
        super().__init__(f"{len(errors)} validation error{'s' if len(errors) > 1 else ''} for {title}\n"
                         f"{'.'.join(map(str, first['loc']))}\n  {first['msg']}")

    def errors(self) -> list[dict]:
        return self._errors


class _Invalid(Exception):
    """Errors found below a value; each {loc, msg, type, input}, loc relative to it."""

    def __init__(self, errors: list[dict]):
        self.errors = errors


def _fail(kind: str, msg: str, value) -> _Invalid:
    return _Invalid([{"loc": (), "msg": msg, "type": kind, "input": value}])


def _within(errors: list[dict], loc) -> list[dict]:
    return [{**e, "loc": (loc, *e["loc"])} for e in errors]


# -- one checker per type: (value) -> value, or raise _Invalid ---------------------
def _int(v):
    t = type(v)
    if t is int:
        return v
    if t is bool:
        return int(v)
    if t is float:
        if v.is_integer():
            return int(v)
        raise _fail("int_from_float", "Input should be a valid integer, got a number with a fractional part", v)
    if t is str:
        try:
            return int(v.strip())
        except ValueError:
            raise _fail("int_parsing", "Input should be a valid integer, unable to parse string as an integer",
                        v) from None
    raise _fail("int_type", "Input should be a valid integer", v)


def _float(v):
    t = type(v)
    if t is float:
        return v
    if t is int or t is bool:
        return float(v)
    if t is str:
        try:
            return float(v.strip())
        except ValueError:
            raise _fail("float_parsing", "Input should be a valid number, unable to parse string as a number",
                        v) from None
    raise _fail("float_type", "Input should be a valid number", v)


def _str(v):
    if type(v) is str:
        return v
    raise _fail("string_type", "Input should be a valid string", v)


def _bool(v):
    if type(v) is bool:
        return v
    if type(v) is int and v in (0, 1):
        return bool(v)
    if type(v) is str and v.strip().lower() in ("0", "1", "true", "false", "yes", "no", "on", "off", "t", "f", "y",
                                                    "n"):
        return v.strip().lower() in ("1", "true", "yes", "on", "t", "y")
    raise _fail("bool_parsing", "Input should be a valid boolean", v)


def _path(v):
    if isinstance(v, (str, Path)):
        return Path(v)
    raise _fail("path_type", "Input is not a valid path for <class 'pathlib.Path'>", v)


def _any(v):
    return v


_SCALARS = {int: _int, float: _float, str: _str, bool: _bool, Path: _path, Any: _any}


def _literal(choices: tuple):
    shown = [repr(c) for c in choices]
    expected = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]

    def check(v):
        for c in choices:
            if v == c and type(v) is type(c):
                return c
        raise _fail("literal_error", f"Input should be {expected}", v)
    return check


def _union(arms: list, nullable: bool):
    def check(v):
        if v is None and nullable:
            return None
        first = None
        for arm in arms:
            try:
                return arm(v)
            except _Invalid as err:
                first = first or err
        raise first
    return check


def _list(item):
    def check(v):
        if not isinstance(v, (list, tuple)):
            raise _fail("list_type", "Input should be a valid list", v)
        out, errors = [], []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except _Invalid as err:
                errors += _within(err.errors, i)
        if errors:
            raise _Invalid(errors)
        return out
    return check


def _tuple(items: list):
    def check(v):
        if not isinstance(v, (list, tuple)):
            raise _fail("tuple_type", "Input should be a valid tuple", v)
        if len(v) != len(items):
            raise _fail("too_long" if len(v) > len(items) else "missing",
                        f"Tuple should have {len(items)} items", v)
        out, errors = [], []
        for i, (x, item) in enumerate(zip(v, items)):
            try:
                out.append(item(x))
            except _Invalid as err:
                errors += _within(err.errors, i)
        if errors:
            raise _Invalid(errors)
        return tuple(out)
    return check


def _dict(key, value):
    def check(v):
        if not isinstance(v, dict):
            raise _fail("dict_type", "Input should be a valid dictionary", v)
        out, errors = {}, []
        for k, x in v.items():
            try:
                out[key(k)] = value(x)
            except _Invalid as err:
                errors += _within(err.errors, k)
        if errors:
            raise _Invalid(errors)
        return out
    return check


def _model(cls):
    def check(v):
        if isinstance(v, cls):
            return v
        if not isinstance(v, dict):
            raise _fail("model_type", f"Input should be a valid dictionary or instance of {cls.__name__}", v)
        return cls._build(v)
    return check


def _bounds(check, limits: list):
    def bounded(v):
        v = check(v)
        if v is None:
            return v
        for f in limits:
            for bound, ok, kind, words in ((f.ge, v >= f.ge if f.ge is not None else True, "greater_than_equal",
                                            "greater than or equal to"),
                                           (f.gt, v > f.gt if f.gt is not None else True, "greater_than",
                                            "greater than"),
                                           (f.le, v <= f.le if f.le is not None else True, "less_than_equal",
                                            "less than or equal to"),
                                           (f.lt, v < f.lt if f.lt is not None else True, "less_than", "less than")):
                if bound is not None and not ok:
                    raise _fail(kind, f"Input should be {words} {bound}", v)
        return v
    return bounded


def _before(check, funcs: list):
    def run(v):
        for f in reversed(funcs):   # as pydantic: the last one given runs first
            try:
                v = f(v)
            except (ValueError, AssertionError) as err:
                raise _fail("value_error", f"Value error, {err}", v) from None
        return check(v)
    return run


def _checker(tp):
    """The check of a type annotation."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        check = _checker(base)
        limits = [m for m in meta if isinstance(m, Field)]
        if limits:
            check = _bounds(check, limits)
        funcs = [m.func for m in meta if isinstance(m, BeforeValidator)]
        return _before(check, funcs) if funcs else check
    if origin is Literal:
        return _literal(get_args(tp))
    if origin is typing.Union or origin is types.UnionType:
        args = get_args(tp)
        return _union([_checker(a) for a in args if a is not type(None)], type(None) in args)
    if origin is list:
        return _list(_checker(get_args(tp)[0]))
    if origin is dict:
        k, v = get_args(tp)
        return _dict(_checker(k), _checker(v))
    if origin is tuple:
        return _tuple([_checker(a) for a in get_args(tp)])
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _model(tp)
    if tp in _SCALARS:
        return _SCALARS[tp]
    raise TypeError(f"settings_base cannot check fields of type {tp!r}")


class _FieldInfo:
    __slots__ = ("annotation", "default", "default_factory", "check")

    def __init__(self, annotation, default, default_factory, check):
        self.annotation, self.default, self.default_factory, self.check = annotation, default, default_factory, check

    @property
    def required(self) -> bool:
        return self.default is _UNSET and self.default_factory is None

    def make_default(self):
        return self.default_factory() if self.default_factory is not None else self.default


class BaseModel:
    """A settings class: its annotated class attributes are its fields."""

    model_config: dict = {}
    model_fields: dict = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        module = sys.modules[cls.__module__].__dict__
        hints = typing.get_type_hints(cls, globalns=module, include_extras=True)
        fields = {}
        for name, tp in hints.items():
            if name.startswith("_") or get_origin(tp) is typing.ClassVar or name in ("model_config", "model_fields"):
                continue
            raw = getattr(cls, name, _UNSET)
            default, factory = raw, None
            if isinstance(raw, Field):   # name: T = Field(default_factory=...)
                default, factory = raw.default, raw.default_factory
                if default is not _UNSET:
                    setattr(cls, name, default)
                elif name in cls.__dict__:
                    delattr(cls, name)
            fields[name] = _FieldInfo(tp, default, factory, _checker(tp))
        cls.model_fields = fields
        cls._after = [fn for klass in reversed(cls.__mro__) for fn in vars(klass).values()
                      if getattr(fn, "_model_validator", False)]

    def __init__(self, **data):
        try:
            self._fill(self._validated(data))
        except _Invalid as err:
            raise ValidationError(type(self).__name__, err.errors) from None

    @classmethod
    def _build(cls, data: dict):
        obj = cls.__new__(cls)
        obj._fill(cls._validated(data))
        return obj

    @classmethod
    def _validated(cls, data: dict) -> dict:
        errors, values = [], {}
        for name, info in cls.model_fields.items():
            if name in data:
                try:
                    values[name] = info.check(data[name])
                except _Invalid as err:
                    errors += _within(err.errors, name)
            elif info.required:
                errors.append({"loc": (name,), "msg": "Field required", "type": "missing", "input": data})
            else:
                values[name] = info.make_default()
        if cls.model_config.get("extra") == "forbid":
            errors += [{"loc": (k,), "msg": "Extra inputs are not permitted", "type": "extra_forbidden",
                        "input": v} for k, v in data.items() if k not in cls.model_fields]
        if errors:
            raise _Invalid(errors)
        return values

    def _fill(self, values: dict) -> None:
        object.__setattr__(self, "__dict__", values)
        for fn in type(self)._after:
            try:
                result = fn(self)
            except (ValueError, AssertionError) as err:
                raise _Invalid([{"loc": (), "msg": f"Value error, {err}", "type": "value_error",
                                 "input": dict(values)}]) from None
            if result is not None and result is not self:
                object.__setattr__(self, "__dict__", dict(result.__dict__))

    @classmethod
    def model_validate(cls, obj):
        if isinstance(obj, cls):
            return obj
        try:
            return _model(cls)(obj)
        except _Invalid as err:
            raise ValidationError(cls.__name__, err.errors) from None

    def model_copy(self, update: dict | None = None):
        """A copy with some fields replaced (not validated, as pydantic's)."""
        obj = type(self).__new__(type(self))
        object.__setattr__(obj, "__dict__", {**self.__dict__, **(update or {})})
        return obj

    def __setattr__(self, name, value):
        if type(self).model_config.get("frozen"):
            raise ValidationError(type(self).__name__, [{"loc": (name,), "msg": "Instance is frozen",
                                                          "type": "frozen_instance", "input": value}])
        if name not in type(self).model_fields:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}")
        self.__dict__[name] = _model_field_check(type(self), name, value)

    def __eq__(self, other):
        return type(other) is type(self) and other.__dict__ == self.__dict__

    def __hash__(self):
        return hash((type(self), tuple((k, _hashable(v)) for k, v in self.__dict__.items())))

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


def _model_field_check(cls, name, value):
    try:
        return cls.model_fields[name].check(value)
    except _Invalid as err:
        raise ValidationError(cls.__name__, _within(err.errors, name)) from None


def _hashable(v):
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    return v
