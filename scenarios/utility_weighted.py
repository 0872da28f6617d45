"""Autor et al. 2025: cost-weighted training vs symmetric training + post-hoc threshold."""

from recsim.experiments.utility import UtilityScenario

SCENARIO = UtilityScenario(
    name="utility-weighted",
    description="Cost-weighted cross-entropy vs plain cross-entropy + threshold c_FP/(c_FP+c_FN): "
    "expected cost on the same held-out data, and a linear probe of the learned representation.",
    base={"cost_fp": 1.0, "cost_fn": 30.0, "repeats": 3},
)
