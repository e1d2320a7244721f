"""A local emulator of the Nano Banana Pro queue service, for tests, demos and benchmarks.

It builds its JSON itself and imports nothing from the SDK, so that an SDK parsing bug
cannot cancel itself out.
"""

from .config import EmulatorConfig, Faults, ServiceTime, TaskFaults, Variants
from .server import Emulator
from .stats import EmulatorStats, TaskRecord

__all__ = [
    "Emulator",
    "EmulatorConfig",
    "EmulatorStats",
    "Faults",
    "ServiceTime",
    "TaskFaults",
    "TaskRecord",
    "Variants",
]
