"""What every speed benchmark measures: one core of a field box. Import this before numpy.

It sets one BLAS/OpenMP thread and pins the process (and the processes it starts) to one core, and
`machine_info()` describes the machine for the results file, load average included, since figures
taken on a busy machine are read differently.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
PINNED_CORE = None
if hasattr(os, "sched_setaffinity"):
    PINNED_CORE = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {PINNED_CORE})


def machine_info() -> dict:
    import numpy as np

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu or platform.machine(),
        "machine": platform.machine(),
        "system": platform.platform(),
        "logical_cpus": os.cpu_count(),
        "pinned_core": PINNED_CORE,
        "load_average_1min": os.getloadavg()[0],
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
