"""The two plugins (zonemta-plugin/, haraka-plugin/) are installed on their own,
each without dependencies, so they carry the same transport and shutdown code
as copies: those copies must stay identical."""
from tests.conftest import ROOT

SHARED = ("lib/reporter.js", "lib/ring-buffer.js", "lib/lifecycle.js", "bench/sink.js")


def test_shared_plugin_files_are_identical():
    for name in SHARED:
        zonemta = (ROOT / "zonemta-plugin" / name).read_text()
        haraka = (ROOT / "haraka-plugin" / name).read_text()
        assert zonemta == haraka, f"zonemta-plugin/{name} and haraka-plugin/{name} differ: change both"
