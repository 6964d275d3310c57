import os
from pathlib import Path

import pytest

from peers.blazepose_client import BlazePoseUnavailable, find_venv


@pytest.fixture(scope="session")
def blazepose_venv() -> Path:
    """The MediaPipe venv; skip without it, or fail when CI (MARGIPOSE_REQUIRE_BLAZEPOSE=1)
    promised it."""
    try:
        return find_venv()
    except BlazePoseUnavailable as exc:
        if os.environ.get("MARGIPOSE_REQUIRE_BLAZEPOSE") == "1":
            pytest.fail(f"MARGIPOSE_REQUIRE_BLAZEPOSE=1 but {exc}")
        pytest.skip(str(exc))
