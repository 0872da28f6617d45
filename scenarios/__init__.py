"""Built-in scenarios: one module each, exposing ``SCENARIO`` (see :mod:`recsim.scenario`)."""
