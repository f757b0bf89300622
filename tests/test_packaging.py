"""The wheel `pip install .` (and the Dockerfile) builds carries what the sidecar
needs at run time: the catalog, and both C speedups."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_has_catalog_and_extensions(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    [wheel] = tmp_path.glob("otel_mta-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    catalog = sorted(n for n in names if n.startswith("otel_mta/catalog/") and n.endswith(".yaml"))
    assert catalog == sorted(f"otel_mta/catalog/{p.name}" for p in (ROOT / "otel_mta" / "catalog").glob("*.yaml"))
    assert any(n.startswith("otel_mta/sources/_msgpack_js") and n.endswith(".so") for n in names)
    assert any(n.startswith("otel_mta/signals/_wire") and n.endswith(".so") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "otel-mta = otel_mta.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_default_sidecar_loads_no_client_library_of_a_source_that_is_off(tmp_path):
    """pymongo, redis (and through it the OpenTelemetry SDK, which redis-py
    imports when installed) are loaded only when their poller is on; the
    product never imports the SDK itself (it is a test extra)."""
    import tomllib
    program = (
        "import sys\n"
        "from otel_mta import config\n"
        "from otel_mta.app import App\n"
        "env = {'OTEL_MTA_DATA_DIR': sys.argv[1], 'OTEL_MTA_HEALTH_ENDPOINT': 'off'}\n"
        "App(config.load(environ=env))\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & {'pymongo', 'redis', 'bson'})))\n"
        "print('sdk' if any(m.startswith('opentelemetry.sdk') for m in sys.modules) else '')\n"
        "App(config.load(environ={**env, 'OTEL_MTA_REDIS_URL': 'redis://127.0.0.1:1/0',\n"
        "                         'OTEL_MTA_MONGODB_URI': 'mongodb://127.0.0.1:1/'}))\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & {'pymongo', 'redis'})))\n")
    res = subprocess.run([sys.executable, "-c", program, str(tmp_path)], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    off, sdk, on = (res.stdout.split("\n") + ["", "", ""])[:3]
    assert off == "" and sdk == "", res.stdout
    assert "redis" in on.split(), res.stdout     # on: loaded (pymongo at the first poll)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not any(d.startswith("opentelemetry-sdk") for d in deps)
