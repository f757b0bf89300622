"""otel_mta/settings_base.py validates config.py's settings classes in place of
pydantic (whose schema machinery was a third of the idle sidecar's memory).
Held to pydantic itself: the same class declared with each, fed the same
generated inputs, must give the same values, or fail on the same field with
the same error type and message (the words config.py shows the operator)."""
# no `from __future__ import annotations`: the classes below are declared in a function, with local names

from pathlib import Path
from typing import Annotated, Literal

import pydantic
import pytest
from hypothesis import given, settings, strategies as st

from otel_mta import config, settings_base


def _declare(lib):
    """The annotation forms config.py uses, declared with `lib`'s Field/BeforeValidator."""
    F, BV = lib.Field, lib.BeforeValidator
    Dur = Annotated[float, BV(config._duration)]
    Size = Annotated[int, BV(config._size)]
    Endpoint = Annotated[tuple[str, int] | None, BV(config.parse_endpoint)]
    Flag = Annotated[bool, BV(config._bool)]
    Length = Annotated[int | None, F(ge=0)]

    class Inner(lib.BaseModel):
        model_config = lib.ConfigDict(extra="forbid", frozen=True)
        enabled: Flag = False
        max_size: Size = 1 << 30

    class Outer(lib.BaseModel):
        model_config = lib.ConfigDict(extra="forbid", frozen=True)
        n: int = 0
        x: float = 0.0
        s: str = "a"
        maybe: str | None = None
        pick: Literal["grpc", "http/protobuf"] = "grpc"
        headers: dict[str, str] = F(default_factory=dict)
        names: list[str] = F(default_factory=list)
        batch: Annotated[int, F(ge=1, le=100)] = 10
        delay: Annotated[Dur, F(gt=0)] = 1.0
        size: Size = 5
        endpoint: Endpoint = ("0.0.0.0", 1)
        limit: Length = None
        capped: Annotated[Length, BV(lambda v: None if config._is_off(v) else v)] = 4096
        path: Path = Path("x")
        inner: Inner = Inner()

        @lib.model_validator(mode="after")
        def _consistent(self):
            if self.s == "bad":
                raise ValueError("s may not be bad")
            return self
    return Outer


OURS, THEIRS = _declare(settings_base), _declare(pydantic)
SCALAR = (st.integers(-3, 200) | st.floats(allow_nan=False, allow_infinity=False, width=32) | st.booleans()
          | st.none() | st.sampled_from(["", "1", "12", "1.5", "x", "off", "true", "15s", "500ms", "32MiB",
                                         "host:80", "[::1]:9", "bad", "grpc", "http/protobuf", "json", " 7 "]))
VALUE = SCALAR | st.lists(SCALAR, max_size=3) | st.dictionaries(st.sampled_from(["a", "b"]), SCALAR, max_size=2)
FIELDS = list(OURS.model_fields) + ["unknown"]
INPUT = st.dictionaries(st.sampled_from(FIELDS), VALUE | st.dictionaries(st.sampled_from(["enabled", "max_size",
                                                                                          "other"]), SCALAR),
                        max_size=4)


def _outcome(cls, data):
    try:
        m = cls(**data)
    except (pydantic.ValidationError, settings_base.ValidationError) as err:
        e = err.errors()[0]
        loc = tuple(p for p in e["loc"] if not str(p).startswith(("function-", "tuple[", "union[", "int", "str",
                                                                    "float", "bool", "list[", "dict[")))
        return ("error", loc, e["type"], e["msg"])
    return ("ok", {k: getattr(m, k) if k != "inner" else (m.inner.enabled, m.inner.max_size)
                   for k in OURS.model_fields})


@settings(max_examples=1500, deadline=None)
@given(data=INPUT)
def test_values_and_errors_match_pydantic(data):
    ours, theirs = _outcome(OURS, data), _outcome(THEIRS, data)
    if ours[0] == "error" and theirs[0] == "error":
        # the first error of each: pydantic may order them differently when several fields are wrong
        assert ours[2:] == theirs[2:] or len([k for k in data if k in FIELDS]) > 1, (data, ours, theirs)
        if len(data) == 1:
            assert ours == theirs, (data, ours, theirs)
    else:
        assert ours == theirs, (data, ours, theirs)


def test_the_real_settings_load_alike():
    assert config.load(environ={}) == config.Settings()
    s = config.load(environ={"OTEL_EXPORTER_OTLP_HEADERS": "a=1", "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": "512",
                             "OTEL_MTA_HMAC_KEY": "k"})
    assert s.exporter.headers == {"a": "1"} and s.batch.max_batch == 512


def test_frozen_copy_and_hash():
    s = config.Settings()
    with pytest.raises(settings_base.ValidationError, match="frozen"):
        s.log_level = "debug"
    c = s.privacy.model_copy(update={"recipient": "full"})
    assert c.recipient == "full" and s.privacy.recipient == "domain" and c != s.privacy
    assert hash(config.Settings()) == hash(s) and {s.batch: 1}[config.Settings().batch] == 1
    assert repr(s.batch).startswith("BatchSettings(logs_delay=0.5")
