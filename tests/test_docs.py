"""Every configuration key and variable is documented in docs/configuration.md."""
from pathlib import Path

from otel_mta.config import ENV, Settings
from otel_mta.settings_base import BaseModel

DOC = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()


def _leaves(model: BaseModel, prefix=""):
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _leaves(value, prefix + name + ".")
        else:
            yield prefix + name


def test_every_key_is_documented():
    missing = []
    for key in _leaves(Settings()):
        head, _, last = key.rpartition(".")
        # a row may name sibling keys together: `sources.redis.interval`, `.timeout`
        if f"`{key}`" not in DOC and not (head and f"`.{last}`" in DOC and f"`{head}." in DOC):
            missing.append(key)
    assert not missing, f"not in docs/configuration.md: {missing}"


def test_every_variable_is_documented():
    missing = [var for var in ENV if f"`{var}`" not in DOC]
    assert not missing, f"not in docs/configuration.md: {missing}"
