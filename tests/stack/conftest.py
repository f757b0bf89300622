"""Makes the stack fixtures available to tests/stack itself.

Other test folders get them when tests/conftest.py says
`pytest_plugins = ["tests.stack.fixtures"]` (with pytest `pythonpath = ["."]`);
then they are already registered and not imported a second time here.
"""

import sys

if "tests.stack.fixtures" not in sys.modules:
    from .fixtures import *  # noqa: F401,F403
