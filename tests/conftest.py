import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# The acceptance matrix table at the end of the session (scenario x flavor).
from matrix.summary import pytest_terminal_summary  # noqa: E402,F401


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` run only with NSB_SLOW=1 (the long tier: load cycles, every kill point)."""
    if os.environ.get("NSB_SLOW") == "1":
        return
    import pytest
    skip = pytest.mark.skip(reason="slow tier: run with NSB_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
