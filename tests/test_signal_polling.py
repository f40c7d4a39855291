"""The server's main thread acts on a stop signal whichever of its threads the kernel hands it to
(serving/shutdown.py: `PollingEvent`). The kernel may deliver a process-directed signal to any thread; Python runs
the handler in the main thread only, and only between bytecodes, so a main thread blocked in one long manager
wait sleeps through a stop signal another thread took. Here the signal is sent to another thread on purpose (`pthread_kill`)."""

from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import threading
import time

import pytest

from vlmchallenge.serving.shutdown import PollingEvent


class Stopped(Exception):
    pass


def raise_stopped(signum, frame):
    raise Stopped


@pytest.fixture
def event():
    with mp.Manager() as manager:
        yield manager.Event()


def main_thread_reads_a_socket(main: int) -> bool:
    frame = sys._current_frames().get(main)
    return frame is not None and frame.f_code.co_name in {"_recv", "_recv_bytes", "recv"}


def signal_another_thread_once_main_waits() -> None:
    """Once the main thread is blocked reading the manager's reply (checked on its stack, not timed), SIGUSR2 to a
    sleeping thread that is not the main one."""
    main = threading.main_thread().ident
    sleeper = threading.Thread(target=time.sleep, args=(120,), daemon=True)
    sleeper.start()

    def send() -> None:
        while not main_thread_reads_a_socket(main):
            time.sleep(0.01)
        signal.pthread_kill(sleeper.ident, signal.SIGUSR2)

    threading.Thread(target=send, daemon=True).start()


def waited_until_stopped(wait) -> float:
    previous = signal.signal(signal.SIGUSR2, raise_stopped)
    start = time.monotonic()
    try:
        signal_another_thread_once_main_waits()
        with pytest.raises(Stopped):
            wait()
            time.sleep(0)  # a wait that returned at its timeout gives the handler its chance here
        return time.monotonic() - start
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_the_polling_wait_hears_a_signal_another_thread_took(event):
    """Interrupted, not ended by its timeout (SIGNAL_POLL_S after the signal on an idle machine)."""
    assert waited_until_stopped(lambda: PollingEvent(event).wait(timeout=60)) < 60


def test_a_plain_manager_wait_sleeps_through_it(event):
    """The fault itself: the same signal, and the proxy's own wait returns only at its timeout."""
    assert waited_until_stopped(lambda: event.wait(timeout=1)) >= 1  # the whole timeout, however long


def test_it_passes_set_and_timeouts_through(event):
    polling = PollingEvent(event)
    assert polling.wait(timeout=0.1) is False and not polling.is_set()
    polling.set()
    assert event.is_set() and polling.wait() is True
