"""The wheel bundle for the lent GPU machine: the pins of `bench/device/bundle.txt`, for its CPython 3.12 on
manylinux x86-64, in one ignored folder, checked to travel within the 64 MiB a device run may carry.

    .venv/bin/python bench/device/bundle.py            # -> .whl/ (ignored), then the size check
    .venv/bin/python bench/device/bundle.py --check    # the size check only

The device has no package index, so nothing there may resolve a need: every wheel is downloaded here with
`--no-deps`, and the bundle must already hold all that the image lacks (docs/gpu-check.md §1). A pin with no
wheel on PyPI (antlr4-python3-runtime 4.9.3) is built here, and must come out pure Python (`py3-none-any`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PINS = REPO / "bench" / "device" / "bundle.txt"
DEST = REPO / ".whl"
LIMIT_BYTES = 64 * 2**20  # what one device run may carry: the working tree plus carried paths
# the device image's Python (its documentation: Python 3.12.3 at /opt/torch/.venv) and the manylinux tags
# pip must be told one by one when downloading for another platform
TARGET = [
    "--python-version",
    "3.12",
    "--implementation",
    "cp",
    "--abi",
    "cp312",
    "--abi",
    "abi3",
    "--abi",
    "none",
]
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34)] + ["manylinux2014_x86_64"]


def pins() -> list[str]:
    """`name==version` per line of bundle.txt, comments dropped."""
    lines = (line.split("#", 1)[0].strip() for line in PINS.read_text().splitlines())
    found = [line for line in lines if line]
    bad = [p for p in found if "==" not in p]
    if bad:
        raise SystemExit(f"{PINS}: every line pins one version (name==version); got {bad}")
    return found


def wheel_name(pin: str) -> str:
    """The file-name prefix a wheel of `pin` has: its name normalised as wheels write it."""
    name, version = pin.split("==")
    return f"{name.replace('-', '_').lower()}-{version}-"


def fetch(pin: str, dest: Path) -> Path:
    """The wheel of `pin` in `dest`: downloaded for the device's Python, else built here if pure Python."""
    have = [w for w in dest.glob("*.whl") if w.name.lower().startswith(wheel_name(pin))]
    if have:
        return have[0]
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    got = subprocess.run(
        [*pip, "download", "--no-deps", "--only-binary=:all:", *TARGET, *platforms, "-d", str(dest), pin],
        capture_output=True,
        text=True,
    )
    if got.returncode != 0:  # no wheel on the index: build one, which the device can use only if pure Python
        subprocess.run([*pip, "wheel", "--no-deps", "-w", str(dest), pin], check=True)
    (wheel,) = [w for w in dest.glob("*.whl") if w.name.lower().startswith(wheel_name(pin))]
    if got.returncode != 0 and not wheel.name.endswith("-py3-none-any.whl"):
        raise SystemExit(
            f"{pin}: no wheel for CPython 3.12 manylinux x86-64, and the one built here is {wheel.name}"
        )
    return wheel


def tree_bytes() -> int:
    """What a device run sends besides carried paths: tracked and untracked-not-ignored files."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return sum((REPO / p.decode()).stat().st_size for p in listed if p and (REPO / p.decode()).is_file())


def check_size(dest: Path) -> int:
    """Fails when the working tree plus the bundle would not travel; returns their total."""
    bundle = sum(w.stat().st_size for w in dest.glob("*.whl"))
    total = tree_bytes() + bundle
    mib = f"{total / 2**20:.1f} MiB (tree {(total - bundle) / 2**20:.1f} + bundle {bundle / 2**20:.1f})"
    if total > LIMIT_BYTES:
        raise SystemExit(f"the device run would carry {mib}: over the 64 MiB limit")
    print(f"bundle: {len(list(dest.glob('*.whl')))} wheels; a device run carries {mib} of 64 MiB")
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dest", type=Path, default=DEST)
    p.add_argument("--check", action="store_true", help="only check the size of what a device run carries")
    a = p.parse_args()
    a.dest.mkdir(exist_ok=True)
    if not a.check:
        wanted = {fetch(pin, a.dest) for pin in pins()}
        for stale in set(a.dest.glob("*.whl")) - wanted:  # two versions of one package stop the whole install
            stale.unlink()
    check_size(a.dest)


if __name__ == "__main__":
    main()
