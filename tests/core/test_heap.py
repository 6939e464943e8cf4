import gc

from core.heap import YOUNG_THRESHOLD, freeze_startup_heap


def test_a_serving_process_freezes_its_startup_heap_and_collects_less_often() -> None:
    before = gc.get_threshold()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
