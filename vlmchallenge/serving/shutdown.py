"""SIGTERM as a graceful shutdown of the LitServe server and every process it started.

`LitServer.run` shuts down gracefully on `KeyboardInterrupt` (uvicorn finishes in-flight requests, then the
inference workers and the multiprocessing manager are stopped), but installs no SIGTERM handler: SIGTERM
(`docker stop`, Kubernetes, systemd) killed only the main process and left the API process holding the port,
answering `/health` with 500 (docs/serving.md §2). So the main process turns SIGTERM into that same
`KeyboardInterrupt`.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def sigterm_as_keyboard_interrupt() -> Iterator[None]:
    main_pid = os.getpid()

    def on_sigterm(signum, frame):
        if os.getpid() != main_pid:
            # a forked worker inherited this handler: end as SIGTERM ends it by default (LitServe stops its
            # workers with `terminate()`, i.e. SIGTERM, once uvicorn has finished the in-flight requests)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        signal.signal(signum, signal.SIG_IGN)  # a second SIGTERM must not interrupt the shutdown itself
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
