"""``python -m recsim`` (as torchrun launches it): the ``recsim`` command."""

from recsim.cli import main

main()
