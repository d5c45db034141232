"""What each provider can do, one module each, and the registry the batch-file checks look in.

An offer is the provider's published menu (models, modes, aspects, counts, prompt lengths) and the
``check`` that holds a job against it. It lives here, below ``workers``, because a batch file is
checked where it is read (``genq submit``, ``genq run``, the inbox) before anything is written, and
``jobs`` never imports ``workers`` to do it; each adapter in ``workers.providers`` answers its own
``check`` with its offer's, and builds its requests from the same constants.
"""

from __future__ import annotations

from jobs.offers import cloudsway, gencraft, girlgenerator, qtpixel, talecraft
from jobs.offers.base import Check, Unsupported

__all__ = ["CHECKS", "Check", "Unsupported"]

CHECKS: dict[str, Check] = {
    "cloudsway": cloudsway.check,
    "gencraft": gencraft.check,
    "girlgenerator": girlgenerator.check,
    "qtpixel": qtpixel.check,
    "talecraft": talecraft.check,
}
"""Each provider genq drives, and what of a job it cannot do."""
