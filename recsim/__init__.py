"""recsim-cascade: a multi-round simulator of biased feedback cascading through learning loops.

Shape legend used across the package:
    U   users in the world              N   items in the catalogue
    B   users acting in one round       C   candidates per user
    K   slate size (positions 1..K)     D   latent / embedding dimension
    P   users of the fixed evaluation panel

Importing this package is cheap: torchrec and mlflow are imported only where they are used.
"""

__version__ = "0.1.0"
