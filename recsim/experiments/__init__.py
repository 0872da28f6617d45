"""Experiments that are not round loops, or that add scenario-level results to one: the Ma et al.
synthetic (:mod:`.ma`), utility-weighted losses (:mod:`.utility`), overoptimization fits
(:mod:`.overoptimization`) and cross-domain tables (:mod:`.crossdomain`)."""
