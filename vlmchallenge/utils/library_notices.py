"""Library notices that are noise for this project, dropped at import so every command starts clean.

bitsandbytes (0.50, `backends/cpu/ops.py`) logs a warning at import on CPUs with AVX512-BF16: "Failed to load CPU
gemm_4bit_forward from kernels-community: No module named 'kernels' ...". The optional `kernels` package would
*download* a kernel from the Hugging Face Hub at run time, which this project never does (docs/families.md
§8); without it bitsandbytes uses its own bundled CPU 4-bit path, which is what our CPU tests exercise.
Only that exact notice, with that exact cause, is dropped; any other failure of the same call still shows.
"""

from __future__ import annotations

import logging

BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_KERNELS_NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community"


class _WithoutKernelsPackage(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(BNB_KERNELS_NOTICE):
            return True
        return "No module named 'kernels'" not in record.getMessage()


def drop_known_notices() -> None:
    """Install the filters (idempotent)."""
    logger = logging.getLogger(BNB_CPU_LOGGER)
    if not any(isinstance(f, _WithoutKernelsPackage) for f in logger.filters):
        logger.addFilter(_WithoutKernelsPackage())
