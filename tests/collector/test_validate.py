"""Every Collector config we ship passes the real Collector's `validate`."""
from __future__ import annotations

import subprocess

import pytest
from otelcol_harness import CONFIG_DIR

BACKEND_FILES = sorted(p.relative_to(CONFIG_DIR).as_posix() for p in (CONFIG_DIR / "backends").glob("*.yaml"))

# Each entry is one way the configs are meant to be run (overlays merge left to right).
SHIPPED = [
    ["gateway.yaml"],
    ["gateway.yaml", "tail-sampling.yaml"],
    ["loadbalancer.yaml"],
    ["local.yaml"],
    # every backend on its own, and all of them at once with tail sampling
    *[["gateway.yaml", b] for b in BACKEND_FILES],
    ["gateway.yaml", *BACKEND_FILES, "tail-sampling.yaml"],
]


def validate(bin_path, configs, env=None):
    args = [str(bin_path), "validate"] + [f"--config={CONFIG_DIR / c}" for c in configs]
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)


def test_every_config_file_is_covered():
    shipped = {c for combo in SHIPPED for c in combo}
    on_disk = {p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.glob("**/*.yaml")} - {"manifest.yaml"}
    assert on_disk == shipped


@pytest.mark.parametrize("configs", SHIPPED, ids=lambda c: "+".join(c))
def test_shipped_config_validates(otelcol_bin, configs):
    res = validate(otelcol_bin, configs, env={"PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr


def test_validate_rejects_a_broken_config(otelcol_bin, tmp_path):
    # The check must be able to fail: a misspelt key in gateway.yaml is refused.
    bad = tmp_path / "gateway.yaml"
    bad.write_text((CONFIG_DIR / "gateway.yaml").read_text().replace("send_batch_size:", "send_batch_sise:"))
    res = subprocess.run([str(otelcol_bin), "validate", f"--config={bad}"], capture_output=True, text=True)
    assert res.returncode != 0
    assert "send_batch_sise" in res.stderr


def test_tail_sampling_alone_is_not_a_config(otelcol_bin):
    # tail-sampling.yaml is an overlay: on its own it has no receivers.
    res = validate(otelcol_bin, ["tail-sampling.yaml"])
    assert res.returncode != 0
