import gc
from collections.abc import Iterator

import pytest
from fusion.runtime import GC_THRESHOLDS, tune_garbage_collector


@pytest.fixture
def unfrozen() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_startup_objects_leave_the_collectors_walks(unfrozen: None) -> None:
    startup_object = {"kept": ["alive"]}
    assert gc.get_freeze_count() == 0
    assert any(startup_object is tracked for tracked in gc.get_objects())
    tune_garbage_collector()
    assert gc.get_freeze_count() > 0
    assert not any(startup_object is tracked for tracked in gc.get_objects())


def test_the_collector_runs_rarely(unfrozen: None) -> None:
    tune_garbage_collector()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > 700  # Python's default
