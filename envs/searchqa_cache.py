"""Files SearchQA makes once and keeps: built under a lock, into a folder renamed into place.

Env workers start together; the first to need a world or an index builds it while the others
wait on the lock, then find it complete. The build writes into a temporary folder beside the
final one and renames it when done, so a crash or a kill leaves no half-built folder that a
later run would take for finished.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .textworld_games import cache_dir


def searchqa_cache(cache: Path | None = None) -> Path:
    """``$TREEGYM_CACHE/searchqa`` (or under ``cache``)."""
    return (cache or cache_dir()) / "searchqa"


def build_once(folder: Path, marker: str, build: Callable[[Path], None]) -> Path:
    """``folder``, made by ``build(tmp_folder)`` unless it already holds ``marker`` (the file
    a build writes last)."""
    if (folder / marker).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (folder / marker).is_file():
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
            try:
                build(tmp)
                tmp.rename(folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return folder
