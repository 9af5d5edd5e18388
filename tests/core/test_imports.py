"""knapsack_rl.core (and the top-level package) never import torch."""

from __future__ import annotations

import subprocess
import sys


def test_core_does_not_import_torch() -> None:
    code = "import sys, knapsack_rl, knapsack_rl.core; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
