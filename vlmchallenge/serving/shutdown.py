"""SIGTERM and Ctrl+C as a graceful shutdown of the LitServe server and every process it started.

`LitServer.run` shuts down gracefully on `KeyboardInterrupt`: it stops the uvicorn API process (which finishes
the in-flight requests), then the inference workers, then the multiprocessing manager. But it installs no
SIGTERM handler, and it expects its children to hear nothing but its own stop orders (docs/serving.md §2):

- SIGTERM to the main process (`docker stop`, Kubernetes) killed the main process alone. So the main process
  turns SIGTERM into that same `KeyboardInterrupt` (`sigterm_as_keyboard_interrupt`).
- A signal to the whole process group (Ctrl+C in a terminal, systemd's default `KillMode=control-group`)
  reached the inference workers and the manager as well: they ended at once, the in-flight requests were
  answered 500 or not at all, and LitServe's monitor thread logged a traceback. So until the API process has
  finished its requests, the inference workers ignore SIGTERM and SIGINT (`leave_stop_signals_to_main`) and
  the manager SIGTERM (it ignores SIGINT itself): the main process heard the same signal and stops them in
  order. The API
  process says it has finished (`ApiServerDone`, LitServe's `on_server_end`, which runs when uvicorn's lifespan
  ends) through a shared event; from then on a stop signal ends them as it does by default, which is how
  LitServe's `terminate()` stops the workers.
- The main thread must hear the signal. Python runs signal handlers in the main thread only, between bytecodes;
  the kernel hands a process-directed signal to any thread that does not block it. `LitServer.run` waits in one
  blocking call on a manager event (a socket read), so a signal taken by another thread (torch's, a watcher)
  sets Python's flag and wakes nothing until that read returns. `PollingEvent` makes that wait return to Python
  every `SIGNAL_POLL_S`, so the handler runs within that time whichever thread took the signal
  (tests/test_signal_polling.py; docs/serving.md §2).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.synchronize import Event

import litserve as ls

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
SIGNAL_POLL_S = 0.5  # how soon the main thread acts on a stop signal another thread took


class PollingEvent:
    """A multiprocessing manager's `Event` proxy whose `wait()` is a loop of short waits (see the module's last
    point); `set`, `is_set` and `clear` pass through. Picklable as the proxy it holds."""

    def __init__(self, event):
        self.event = event

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = SIGNAL_POLL_S if deadline is None else min(SIGNAL_POLL_S, deadline - time.monotonic())
            if self.event.wait(max(step, 0)) or (deadline is not None and time.monotonic() >= deadline):
                return self.event.is_set()

    def set(self) -> None:
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()

    def clear(self) -> None:
        self.event.clear()


def api_done_event() -> Event:
    """Set once the API process has answered its last request. A spawn-context event: the inference workers are
    spawned, and a fork-context semaphore cannot be passed to a spawned process."""
    return mp.get_context("spawn").Event()


class ApiServerDone(ls.Callback):
    """Sets the event when LitServe's API process ends its lifespan (one API process: `num_api_servers=1`)."""

    def __init__(self, api_done: Event):
        self.api_done = api_done

    def on_server_end(self, *args, **kwargs) -> None:
        self.api_done.set()


def leave_stop_signals_to_main(api_done: Event) -> None:
    """In an inference worker: SIGTERM and SIGINT wait for the API process (`end_once_api_is_done`)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda signum, frame: end_once_api_is_done(signum, api_done))


def end_once_api_is_done(signum: int, api_done: Event) -> None:
    """A child's stop signal: ignored while the API process still answers requests (a signal to the whole
    group, which the main process heard too), else the default ending (LitServe's `terminate()`)."""
    if api_done.is_set():
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


@contextmanager
def sigterm_as_keyboard_interrupt(api_done: Event) -> Iterator[None]:
    """In the main process SIGTERM raises `KeyboardInterrupt`, as SIGINT does. A process forked inside (the
    multiprocessing manager, which ignores SIGINT itself; uvicorn installs its own handlers) inherits the
    handler and leaves SIGTERM to the main process."""
    main_pid = os.getpid()

    def on_sigterm(signum, frame):
        if os.getpid() != main_pid:
            end_once_api_is_done(signum, api_done)
            return
        signal.signal(signum, signal.SIG_IGN)  # a second SIGTERM must not interrupt the shutdown itself
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
