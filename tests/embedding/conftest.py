"""GPU-placement tests run everywhere: without a GPU, Numba's CUDA simulator runs the kernels.

``NUMBA_ENABLE_CUDASIM`` must be set before ``numba.cuda`` is first imported; nothing imports it
before these tests do. ``scripts/gpu_check.sh`` sets it to 0 to run the same tests on a real GPU.
"""

from __future__ import annotations

import os

import numba.core.config

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
numba.core.config.reload_config()
