"""A command-line entry point run in this process, as `python -m <module> <args>` runs it.

`runpy` runs the module as `__main__` with `sys.argv` set, as `python -m` does; what the run changes in the process
(argv, cwd, environment, logging handlers, Hydra's global state) is put back. A fresh interpreter per command adds
15-20 s of imports on a 2-core machine (torch, transformers, Lightning, torchmetrics) and tests nothing more, so the
tests that check what a command prints, writes or exits with use this. Tests whose subject is the process itself
(signals, kills, ranks, a server's lifetime) keep a real subprocess.
"""

from __future__ import annotations

import logging
import os
import runpy
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig


@dataclass(frozen=True)
class Finished:
    returncode: int
    output: str  # stdout and stderr together, as a terminal shows them

    @property
    def words(self) -> str:
        """The output with every run of whitespace made one space (tables wrap and pad)."""
        return " ".join(self.output.split())


def run_module(module: str, *args: str, cwd: Path | None = None, log: Path | None = None) -> Finished:
    """`python -m module args` in this process, with nothing downloadable (HF_HUB_OFFLINE=1)."""
    if log is None:
        fd, name = tempfile.mkstemp(prefix=module.rsplit(".", 1)[-1] + "-", suffix=".log")
        os.close(fd)
        log = Path(name)
    rc = run_as_main(module, list(args), log, cwd or Path.cwd())
    return Finished(rc, log.read_text())


def run_as_main(module: str, args: list[str], log: Path, cwd: Path) -> int:
    """`python -m <module> <args>` in this process (runpy runs the module as `__main__`, as `python -m` does),
    its output (fd 1 and 2) into `log`, run in `cwd` with nothing downloadable; returns the exit status. What a
    run changes in the process (argv, cwd, environment, logging handlers, Hydra's global state) is put back."""
    argv, env, here, streams = sys.argv[:], dict(os.environ), os.getcwd(), (sys.stdout, sys.stderr)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    sys.stdout.flush()
    sys.stderr.flush()
    fds = os.dup(1), os.dup(2)
    rc = 0
    with open(log, "w", buffering=1) as out:
        # both levels: pytest's capture replaces sys.stdout, and child processes and C code write to fd 1/2
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        sys.stdout = sys.stderr = out
        try:
            os.chdir(cwd)
            os.environ["HF_HUB_OFFLINE"] = "1"
            sys.argv = [module, *args]
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else int(e.code is not None)
        except BaseException:  # noqa: BLE001 (reported as the command's failure, with its traceback in the log)
            traceback.print_exc()
            rc = 1
        finally:
            out.flush()
            sys.stdout, sys.stderr = streams
            os.dup2(fds[0], 1)
            os.dup2(fds[1], 2)
            for fd in fds:
                os.close(fd)
            os.chdir(here)
            os.environ.clear()
            os.environ.update(env)
            sys.argv = argv
            for h in root.handlers[:]:
                if h not in handlers:
                    root.removeHandler(h)
                    h.close()
            # a handler a library made at import during the run (onto the then sys.stderr): drop it
            for logger in logging.Logger.manager.loggerDict.values():
                for h in getattr(logger, "handlers", [])[:]:
                    if getattr(h, "stream", None) is out:
                        logger.removeHandler(h)
            for h in handlers:
                if h not in root.handlers:
                    root.addHandler(h)
            root.setLevel(level)
            GlobalHydra.instance().clear()
            HydraConfig.instance().cfg = None
    return rc
