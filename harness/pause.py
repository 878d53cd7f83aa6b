"""Named pause points for the fault-injection tests; inert unless ``TREEGYM_PAUSE_AT`` is set.

The run folder's crash-safety claims ("a SIGKILL inside a part write, or inside finalize, loses
nothing") are about windows a few microseconds wide; a test can only land a real kill inside
one if the process waits there. With ``TREEGYM_PAUSE_AT=<point>[@<n>]`` and
``TREEGYM_PAUSE_DIR=<dir>`` in its environment, the ``n``-th time (default 1) a process reaches
``pause_point("<point>")`` it creates ``<dir>/<point>.paused`` and waits until
``<dir>/<point>.go`` exists. The test SIGKILLs it there, or changes the world (remounts the run
folder read-only) and then releases it. Points: ``part-write`` (a task's nodes part is in
place, its samples part and ledger line are not), ``finalize-compact`` (the compacted nodes
file is written under its temporary name, the samples file is not), ``finalize-rename`` (the
``FINALIZING`` marker is down and only ``nodes.parquet`` renamed into place), ``group-commit``
(a group's ledger lines are written, their fsync has not happened: none is acknowledged).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

_reached: Counter[str] = Counter()


def pause_point(name: str) -> None:
    """Wait here if the environment asks for it (see the module docstring)."""
    spec = os.environ.get("TREEGYM_PAUSE_AT")
    if not spec:
        return
    point, _, nth = spec.partition("@")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] != int(nth or 1):
        return
    folder = Path(os.environ["TREEGYM_PAUSE_DIR"])
    (folder / f"{name}.paused").touch()
    while not (folder / f"{name}.go").exists():
        time.sleep(0.01)
