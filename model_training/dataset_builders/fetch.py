"""Fetch Debian's `openclipart-png` and `openclipart-svg` packages into a cache folder.

`apt-get download` needs no root (only readable apt lists; `apt-get update` once, as root,
if the lists are missing) and `dpkg -x` unpacks a .deb anywhere without installing it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

PACKAGES = ("openclipart-png", "openclipart-svg")
SHARE = Path("usr/share/openclipart")


class FetchError(RuntimeError):
    """The packages could not be downloaded or unpacked."""


def find_root(path: Path) -> Path | None:
    """The folder holding `png/` and `svg/`: `path` itself, or `path/root/usr/share/...`."""
    for candidate in (path, path / "root" / SHARE, path / SHARE):
        if (candidate / "png").is_dir() and (candidate / "svg").is_dir():
            return candidate
    return None


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    try:
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise FetchError(f"{cmd[0]} not found: this needs a Debian/Ubuntu system") from exc
    except subprocess.CalledProcessError as exc:
        raise FetchError(f"{' '.join(cmd)} failed:\n{exc.stderr.strip()}") from exc


def fetch_openclipart(
    cache: Path, *, apt_update: bool = False, log: Callable[[str], None] = print
) -> Path:
    """Download and unpack both packages under `cache` (once); return the data root.

    Layout: `cache/debs/*.deb` and `cache/root/usr/share/openclipart/{png,svg}`.
    """
    cache = Path(cache)
    existing = find_root(cache)
    if existing is not None:
        return existing
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    if apt_update:
        log("apt-get update")
        _run(["apt-get", "update"])
    for package in PACKAGES:
        if not list(debs.glob(f"{package}_*.deb")):
            log(f"apt-get download {package}")
            try:
                _run(["apt-get", "download", package], cwd=debs)
            except FetchError as exc:
                raise FetchError(
                    f"{exc}\nIf apt has no package lists, run `apt-get update` once (as root) "
                    "or pass --apt-update."
                ) from exc
    staging = cache / "root.partial"
    shutil.rmtree(staging, ignore_errors=True)
    for deb in sorted(debs.glob("*.deb")):
        log(f"dpkg -x {deb.name}")
        _run(["dpkg", "-x", str(deb), str(staging)])
    staging.rename(cache / "root")
    root = find_root(cache)
    if root is None:
        raise FetchError(f"unpacked packages under {cache} but found no png/ and svg/ folders")
    return root
