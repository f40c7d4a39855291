"""The server's processes under a supervisor: answer while loading, and end at once when a process dies.

`LitServer` (LitServe 0.2.19, pinned) starts a multiprocessing manager, one inference worker per API (spawned;
it loads the model) and the uvicorn API process (forked). Two of its choices did not suit a server that Docker,
systemd or Kubernetes keep running (docs/serving.md §8):

- It waited for the first worker to load the model before uvicorn listened, so until then a client or a probe
  got "connection refused", not the `503 not ready` that `/health` answers while a worker is still loading.
  `FailFastLitServer` starts uvicorn at once: `/health` is 503 until every worker is ready, and requests sent
  meanwhile wait in the queue (within `timeout`).
- When a process died (the OOM killer SIGKILLs an inference worker), its monitor thread logged "Worker
  inference-worker died; shutting down", shut the manager down under the main thread's feet, and the main
  process ended in a raw `EOFError` traceback a while later. Here a watcher thread waits on the process
  sentinels; when an inference worker, the API process or the manager ends while the server is not being
  stopped, it logs ONE line naming the process and the cause, SIGKILLs the other processes (in-flight requests
  are cut: their connections close) and the main process exits with `EXIT_PROCESS_DIED`, so the supervisor
  restarts the whole server on a free port.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import threading
from multiprocessing.connection import wait
from multiprocessing.synchronize import Event

import litserve as ls
from litserve.utils import WorkerSetupStatus

from vlmchallenge.serving.shutdown import PollingEvent

log = logging.getLogger(__name__)

EXIT_PROCESS_DIED = 70  # EX_SOFTWARE in sysexits.h; any non-zero code makes `Restart=on-failure` restart it


def how_it_ended(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (what the kernel's OOM killer sends)" if -exitcode == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {exitcode}"


class FailFastLitServer(ls.LitServer):
    """`LitServer`, listening while the workers load, and ending at once when one of its processes dies.

    `api_done` is the event the API process sets once it has answered its last request (serving/shutdown.py):
    a process that ends after it is part of a shutdown, not a crash."""

    def __init__(self, *args, api_done: Event, **kwargs):
        super().__init__(*args, **kwargs)
        self.api_done = api_done
        self.stopping = threading.Event()  # set when the main process starts its own graceful shutdown
        self.worker_names: dict[mp.process.BaseProcess, tuple[str, str]] = {}  # -> (name, setup-status key)
        self.watcher: threading.Thread | None = None
        self.died: str | None = None  # the line logged when a process died
        self.manager_process: mp.process.BaseProcess | None = None

    def _init_manager(self, num_api_servers: int):
        """LitServe's manager, with the main thread's wait for the shutdown event made signal-responsive
        (serving/shutdown.py: `PollingEvent`)."""
        manager = super()._init_manager(num_api_servers)
        self._shutdown_event = PollingEvent(self._shutdown_event)
        return manager

    def launch_inference_worker(self, lit_api: ls.LitAPI):
        workers = super().launch_inference_worker(lit_api)
        endpoint = lit_api.api_path.split("/")[-1]  # LitServe's key in `workers_setup_status`
        for worker_id, worker in enumerate(workers):
            self.worker_names[worker] = (
                f"inference worker {worker_id} of {lit_api.api_path}",
                f"{endpoint}_{worker_id}",
            )
        return workers

    def verify_worker_status(self) -> None:
        """LitServe blocks here until a worker has loaded the model; do not: uvicorn starts listening at once and
        `/health` answers 503 until every worker is ready. A worker that fails to load exits, which the watcher
        turns into the server's exit (its error is logged above that line)."""

    def _start_worker_monitoring(self, manager, uvicorn_workers) -> None:
        """Called by `LitServer.run` once uvicorn has started; replaces LitServe's polling monitor."""
        watched = {w: name for w, (name, _) in self.worker_names.items() if w in self.inference_workers}
        for uw in uvicorn_workers.values():
            if isinstance(uw, mp.process.BaseProcess):
                watched[uw] = f"API process {uw.name}"
        self.manager_process = getattr(manager, "_process", None)
        if self.manager_process is not None:
            watched[self.manager_process] = "multiprocessing manager"
        self.watcher = threading.Thread(target=self._watch, args=(watched,), daemon=True, name="vlm-watcher")
        self.watcher.start()

    def _watch(self, watched: dict) -> None:
        ended = wait([p.sentinel for p in watched])
        if self.stopping.is_set() or self.api_done.is_set():
            return  # a shutdown ends the processes; `LitServer.run` takes care of them
        process = next(p for p in watched if p.sentinel in ended)
        process.join()  # its exit code
        name = watched[process]
        _, status_key = self.worker_names.get(process, (None, None))
        loading = ""
        if status_key is not None:
            try:
                if self.workers_setup_status.get(status_key) != WorkerSetupStatus.READY:
                    loading = " before it had loaded the model"
            except Exception:  # the manager is gone too
                pass
        self.died = (
            f"{name} (pid {process.pid}) {how_it_ended(process.exitcode)}{loading}; the server exits "
            f"with code {EXIT_PROCESS_DIED} so that its supervisor restarts it (docs/serving.md §8)"
        )
        log.error(self.died)
        # the other processes at once, the manager last: that wakes the main thread, which waits on a manager
        # event in `LitServer.run`, and its `finally` exits (`_perform_graceful_shutdown`)
        others = sorted(mp.active_children(), key=lambda p: p is self.manager_process)
        for p in others:
            p.kill()
        for p in others:
            p.join()

    def _perform_graceful_shutdown(self, manager, uvicorn_workers, shutdown_reason: str = "normal"):
        """`LitServer.run`'s `finally`: a stop signal's graceful shutdown, or, after a process died (the main
        thread's wait on the manager failed), the exit code for the supervisor."""
        processes = [*self.inference_workers, *uvicorn_workers.values(), self.manager_process]
        one_died = shutdown_reason != "keyboard_interrupt" and any(
            isinstance(p, mp.process.BaseProcess) and not p.is_alive() for p in processes
        )
        if self.watcher is not None and (self.died is not None or one_died):
            self.watcher.join()  # it logs the death and ends the other processes
        if self.died is not None:
            raise SystemExit(EXIT_PROCESS_DIED)
        self.stopping.set()
        super()._perform_graceful_shutdown(manager, uvicorn_workers, shutdown_reason)
