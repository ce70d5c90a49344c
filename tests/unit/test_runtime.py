import gc
from collections.abc import Iterator

import pytest
from fusion.runtime import freeze_startup_objects


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_startup_objects_leave_the_collectors_walks(unfrozen: None) -> None:
    startup_object = {"kept": ["alive"]}
    assert gc.get_freeze_count() == 0
    assert any(startup_object is tracked for tracked in gc.get_objects())
    freeze_startup_objects()
    assert gc.get_freeze_count() > 0
    assert not any(startup_object is tracked for tracked in gc.get_objects())
