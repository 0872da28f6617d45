"""The literature as a test suite: a registry of published claims, the studies that test them over
a grid of world settings and seeds, and a report of where each holds (``recsim validate``).

- :mod:`recsim.validation.claims`: :class:`Study` (a scenario, its arms, a grid of settings),
  :class:`Claim` (a paper, one sentence, a statistic over a study's seeds and its claimed sign),
  and the registries :data:`STUDIES` and :data:`CLAIMS`.
- :mod:`recsim.validation.suite`: :func:`validate` runs the studies (re-using finished ones in the
  same folder), evaluates every claim per setting and writes ``report.md``, ``report.json`` and
  one PNG per claim, and logs them to MLflow.
"""

from recsim.validation.claims import CLAIMS, STUDIES, Claim, Setting, Study
from recsim.validation.suite import validate

__all__ = ["CLAIMS", "STUDIES", "Claim", "Setting", "Study", "validate"]
