"""Where shards live: a local folder or a URL (http(s)://, s3://, gs://, any fsspec protocol).

A location is a `Path` when it is local (plain path or `file://`) and a `str` URL otherwise. Small JSON files
(manifest, shard index) are read through fsspec; shards are opened by webdataset's `gopen`, which pipes
http(s) through the `curl` binary but has no handler for s3 and shells out to `gsutil` for gs. So, on import,
every fsspec protocol that gopen lacks (s3, gcs, az, memory, ...) and gs are routed to fsspec's own opener:
one client and one set of credentials for JSON and shards (docs/scaling.md §2). Registering at import time
means spawned DataLoader workers get the handlers too, since unpickling the dataset imports this module.
Remote locations are read-only here: nothing is ever written to a URL.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import fsspec
import webdataset as wds

# Installing the `remote` extra brings these; fsspec's own ImportError names the package, we add the extra.
REMOTE_EXTRA_HINT = "pip install 'vlmchallenge[remote]' (s3fs, gcsfs)"
LOCAL_SCHEMES = ("", "file")
CURL_SCHEMES = ("http", "https")  # what webdataset's gopen opens with `curl`
FSSPEC_OVERRIDES = ("gs",)  # gopen would need the gsutil CLI; gcsfs reads the JSON anyway


def scheme_of(location: str | Path) -> str:
    scheme = urlsplit(str(location)).scheme
    return "" if len(scheme) == 1 else scheme.lower()  # "C:\\data" is a Windows drive, not a scheme


def is_remote(location: str | Path) -> bool:
    return scheme_of(location) not in LOCAL_SCHEMES


def resolve(location: str | Path) -> Path | str:
    """A local location as a `Path` (a `file://` URL becomes its path), a remote one as its URL."""
    text = str(location)
    scheme = scheme_of(text)
    if scheme == "file":
        return Path(url2pathname(urlsplit(text).path))
    if scheme == "":
        return Path(text)
    return text.rstrip("/")


def join(location: Path | str, *parts: str) -> Path | str:
    """`location/part/...`. URLs join with `/` (urljoin only resolves schemes it knows, not s3:// or gs://)."""
    if isinstance(location, Path) or not is_remote(location):
        return Path(location).joinpath(*parts)
    return "/".join([location.rstrip("/"), *(p.strip("/") for p in parts)])


def read_bytes(location: Path | str, what: str = "file") -> bytes:
    """A whole (small) file from a path or URL; a missing file is an error naming the location and `what`."""
    try:
        with fsspec.open(str(location), "rb") as f:
            return f.read()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{location}: no such {what}") from e
    except ImportError as e:
        raise ImportError(f"{location}: {e}; {REMOTE_EXTRA_HINT}") from e


def read_json(location: Path | str, what: str = "file") -> dict:
    """A JSON object from a path or URL; a missing file or bad content is an error naming the location."""
    raw = read_bytes(location, what)
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"{location}: the {what} is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{location}: the {what} must hold a JSON object, found {type(data).__name__}")
    return data


def check_shard_reader(location: Path | str) -> None:
    """Fail early, naming the location, when the tool that opens its shards is missing (instead of a curl
    exit status from inside a DataLoader worker)."""
    scheme = scheme_of(location)
    if scheme in CURL_SCHEMES and shutil.which("curl") is None:
        raise RuntimeError(
            f"{location}: webdataset reads {scheme}:// shards with the `curl` command, which is not on PATH; "
            "install curl (e.g. `apt-get install curl`)"
        )
    if wds.gopen_schemes.get(scheme) is open_with_fsspec:
        try:
            fsspec.get_filesystem_class(scheme)
        except ImportError as e:
            raise ImportError(f"{location}: {e}; {REMOTE_EXTRA_HINT}") from e


def open_with_fsspec(url: str, mode: str = "rb", bufsize: int = 8192, **kw):
    """A webdataset gopen handler (`gopen_schemes[scheme](url, mode, bufsize)`) backed by fsspec."""
    if mode != "rb":
        raise ValueError(f"{url}: shard locations are read-only here (mode {mode!r})")
    try:
        return fsspec.open(url, mode).open()
    except ImportError as e:
        raise ImportError(f"{url}: {e}; {REMOTE_EXTRA_HINT}") from e


def _route_schemes_to_fsspec() -> None:
    for scheme in fsspec.available_protocols():
        if scheme not in LOCAL_SCHEMES and scheme != "local" and scheme not in wds.gopen_schemes:
            wds.gopen_schemes[scheme] = open_with_fsspec
    for scheme in FSSPEC_OVERRIDES:
        wds.gopen_schemes[scheme] = open_with_fsspec


_route_schemes_to_fsspec()
