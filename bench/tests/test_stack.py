"""A benchmark stopped by SIGTERM unwinds, so its broker, stand-in and services are stopped with it."""

import os
import signal

import pytest

from bench.stack import unwound_on_sigterm


def _run_then_terminated(stopped: list[str]) -> None:
    with unwound_on_sigterm():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()  # not reached: the handler raises first
        finally:
            stopped.append("stack")


def test_sigterm_unwinds_the_run_and_the_handler_is_restored_after() -> None:
    before = signal.getsignal(signal.SIGTERM)
    stopped: list[str] = []
    with pytest.raises(SystemExit) as exited:
        _run_then_terminated(stopped)
    assert exited.value.code == 128 + signal.SIGTERM
    assert stopped == ["stack"]
    assert signal.getsignal(signal.SIGTERM) is before
