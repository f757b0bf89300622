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
