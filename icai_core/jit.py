"""Loading the compiled (numba) kernels: one rule for where their machine code is cached.

The kernel modules (`_token_jit`, `_auc_jit`) compile with `cache=True`, which keeps the machine code
beside the module (or in numba's user-wide cache directory) so that a new process, a spawned worker
among them, loads it instead of compiling again. Where neither is writable (a read-only install run
by a user without a home) numba refuses at import ("no locator available"); the cache then goes to a
per-user folder of the temp directory, shared by all processes of that user. Importing a kernel
module is what imports numba (~0.3 s and ~50 MB), so callers import them here, on first use only.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from types import ModuleType


def load(module: str) -> ModuleType:
    """`icai_core.<module>`, imported with the cache rule above."""
    name = f"icai_core.{module}"
    try:
        return importlib.import_module(name)
    except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available for file ..."
        if "no locator available" not in str(exc):
            raise
        import numba

        numba.config.CACHE_DIR = os.path.join(tempfile.gettempdir(), f"principia-numba-{os.getuid()}")
        return importlib.import_module(name)
