"""The sparse CPU runtime: packing, C kernels, engine, benchmark, validation.

libgomp reads its wait policy once, when ``_kernels`` first loads it, so the default is set here, before any
submodule imports the kernels: threads that finish a parallel region sleep instead of spinning. Spinning costs
little on an idle CPU but collapses the engine when another process shares a core (issue 16: 7 ms -> 230 ms at
2 threads with one core busy; passive ~9 ms). A user's own ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` wins; a
process that loaded libgomp before importing ``zoo.runtime`` keeps whatever policy it started with.
"""

import os

if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
