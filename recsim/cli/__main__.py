"""``python -m recsim.cli``: the ``recsim`` command."""

from recsim.cli import main

main()
