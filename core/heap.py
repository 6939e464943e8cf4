"""The collector's view of a long-running process's heap."""

from __future__ import annotations

import gc

# Container allocations between two young collections (CPython's default is 700). A serving
# process holds every incident in flight in memory: at 300 at once the default ran a full
# collection about every 70 incidents, each walking all of them (about 100 ms, a pause for every
# activation and lever call in the process), and the two younger generations' collections walked
# their survivors again and again. Freed objects never reach a collection, so the larger
# generation costs a few MB at most.
YOUNG_THRESHOLD = 10_000


def freeze_startup_heap() -> None:
    """Collect once, then put every object alive now (the modules, classes and schemas a process
    loads to start) out of the cyclic collector's reach for good. Each full collection would
    otherwise walk them all again: about 80 ms in a started worker (140,000 objects), a pause
    for every workflow activation and lever call in the process. Call it once the process is
    ready to serve, so that only what it builds while serving is collected; from then on the
    collector runs less often (YOUNG_THRESHOLD)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
