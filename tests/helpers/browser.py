"""A real headless Chromium (Debian's `chromium` and `chromium-driver`, which `make install` adds) driven by
Selenium, and the review app served by a real uvicorn on a socket bound before the server starts (no port race)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no chromium/chromedriver: `make install` adds them (Debian: apt-get install chromium chromium-driver)",
)


def start_chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(arg)
    # a reload with unsaved edits raises the page's "leave?" prompt; a person answers it, here: leave
    options.set_capability("unhandledPromptBehavior", "accept")
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


@contextmanager
def serving(app):
    """`app` on 127.0.0.1 by a real uvicorn in a thread; yields the base URL, stops the server after."""
    import uvicorn

    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60  # generous: a busy 2-core machine
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the review server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def copy_annotation(folder: Path, into: Path) -> Path:
    return Path(shutil.copytree(folder, into / folder.name))
