"""Ma et al. (KDD 2018) section 3.2: MMoE vs one-gate MoE vs shared-bottom across task correlations."""

from recsim.experiments.ma import MaScenario

SCENARIO = MaScenario(
    name="mmoe-tasks",
    description="Synthetic two-task regression of Ma et al. 2018: MMoE vs one-gate MoE vs "
    "shared-bottom at task correlations 0.5, 0.9, 1.0, several seeds; final test loss table.",
    base={"correlations": [0.5, 0.9, 1.0], "repeats": 5, "epochs": 10},
)
