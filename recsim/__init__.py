"""recsim-cascade: a multi-round simulator of biased feedback cascading through learning loops.

Shape legend used across the package:
    U   users in the world              N   items in the catalogue
    B   users acting in one round       C   candidates per user
    K   slate size (positions 1..K)     D   latent / embedding dimension
    P   users of the fixed evaluation panel

Importing this package is cheap: torchrec and mlflow are imported only where they are used, and
the Python API (:func:`run`, :func:`load`, :class:`Result`, :class:`Scenario`; see
:mod:`recsim.api`) loads on first use.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Result", "Scenario", "load", "run", "scenarios"]


def __getattr__(name: str) -> Any:
    if name in ("run", "load", "Result", "scenarios"):
        from recsim import api

        return getattr(api, name)
    if name == "Scenario":
        from recsim.scenario import Scenario

        return Scenario
    raise AttributeError(f"module 'recsim' has no attribute {name!r}")
