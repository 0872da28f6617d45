"""The domain-agnostic engine: the Domain protocol and the numbered loop (:mod:`.loop`), the runner
that turns a scenario into a run folder (:mod:`.runner`), config base sections, registries, seeded
random streams, errors and crash-injection points. Nothing here imports a domain or the command line.
"""
