"""Where the Lava environment's interpreter is: the host starts Loihi devices and Lava runs with it."""

from __future__ import annotations

import os
from pathlib import Path

from metaedge.sdk.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def lava_python() -> str:
    """METAEDGE_LAVA_PYTHON, else the checkout's .venv-lava; a UserError says how to build it."""
    path = os.environ.get("METAEDGE_LAVA_PYTHON") or str(ROOT / ".venv-lava" / "bin" / "python")
    if not Path(path).exists():
        raise UserError(
            f"the Lava environment is missing ({path}): build it with 'make env' "
            "(Python 3.10 + lava-nc), or point METAEDGE_LAVA_PYTHON at its interpreter"
        )
    return path
