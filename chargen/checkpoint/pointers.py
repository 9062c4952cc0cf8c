"""`last` and `best`: which snapshot of a run each names.

"""

from __future__ import annotations

import os
from pathlib import Path

from chargen.errors import CheckpointError


def _point(link: Path, target: Path) -> None:
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)



def snapshot_dir(run: Path, which: str = "best") -> Path:
    """The snapshot folder to load: `run` itself if it is one, else its `which` (falling back to last).

    A `best` or `last` that leads out of the run's own snapshots/ folder (an absolute link, `..`,
    or a snapshots/ that is itself a link) is refused: loading never follows a link out of the run.
    """
    if os.path.lexists(run / "weights.npz") or os.path.lexists(run / "progress.json"):
        return run
    for name in (which, "last"):
        link = run / name
        if os.path.exists(link):
            target = os.path.realpath(link)
            if os.path.dirname(target) != os.path.join(os.path.realpath(run), "snapshots"):
                shown = os.readlink(link) if link.is_symlink() else "a folder, not a link"
                raise CheckpointError(f"{link} leads out of the run's snapshots/ folder (to {shown}, {target}); "
                                      f"chargen loads only snapshots inside the run: point it at a snapshot in "
                                      f"{run / 'snapshots'} or retrain")
            return Path(target)
    raise CheckpointError(f"{run}: holds no complete snapshot (no 'last' or 'best'); train or resume it")
