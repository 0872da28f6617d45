"""The same mitigations in both domains with matched knobs: position bias (eta) in the recommender
and length bias in the labeler; MMD invariance, a proper-scoring (Brier) term, a rubric gate and its
dense-penalty alternative, sign-split weighting and a 25% external anchor, each on its own against
the unmitigated loop; and the unmitigated loop at a stronger bias in both domains."""

from recsim.experiments.crossdomain import CrossDomainScenario

RECSYS = {
    "domain": "recsys",
    "world": {"n_users": 1000, "n_items": 500},
    "policy": {"n_candidates": 100},
    "ranker": {"name": "mmoe", "position": "shallow_tower", "window": 5},
    "metrics": {"panel_users": 128},
}
LLM = {"domain": "llm", "llm": {"optimizer": "grpo", "reward": "reward_model", "initial_prompts": 4096}}
BOTH = lambda delta: (delta, delta)  # noqa: E731  the same knob in both domains
# mitigation -> (recommender delta, LLM delta)
MITIGATIONS = {
    "none": BOTH({}),
    "invariance": BOTH({"mitigations": {"invariance_weight": 5.0}}),
    "brier": BOTH({"mitigations": {"brier_weight": 1.0}}),
    "gate": BOTH({"mitigations": {"gate": "gate", "diversity_floor": 5}}),
    "dense": BOTH({"mitigations": {"gate": "dense", "diversity_floor": 5}}),
    "sign-split": ({"mitigations": {"sign_split": "w_reinforce"}}, {"llm": {"optimizer": "w_reinforce"}}),
    "anchor": BOTH({"mitigations": {"anchor_share": 0.25}}),
    # The bias knob itself, matched: a steeper position curve / a stronger labeler length bias.
    "none-strong-bias": (
        {"behavior": {"eta": {"mobile": 1.8, "desktop": 1.0}}},
        {"llm": {"length_bias": 3.0}},
    ),
}


def _merge(domain: dict, delta: dict) -> dict:
    return {**domain, **{k: {**domain.get(k, {}), **v} for k, v in delta.items()}}


ARMS = {
    f"{name}/{mitigation}": _merge(domain, deltas[i])
    for i, (name, domain) in enumerate((("recsys", RECSYS), ("llm", LLM)))
    for mitigation, deltas in MITIGATIONS.items()
}
# The cross-domain row of the loop's amplification: the unmitigated loop of each domain with its
# learner trained on a fixed logger's data (the recommender's popularity logger; the LLM reward
# model on the base policy's samples); summary.md pairs each with its closed loop.
for _name in ("recsys", "llm"):
    ARMS[f"{_name}/none@open"] = _merge(ARMS[f"{_name}/none"], {"loop": {"feedback": "open"}})

SCENARIO = CrossDomainScenario(
    name="cross-domain",
    description="Both domains, matched bias knobs, each shared mitigation on or off: cascade "
    "curves of spurious_share, gap and gini normalized to round 0 (cascade.png); the "
    "unmitigated loops' amplification (closed - open) in both domains.",
    base={"loop": {"rounds": 8}},
    arms=ARMS,
    plot=("gap", "spurious_share", "gini", "ece", "gold"),
    table=("gold", "gap", "spurious_share", "gini", "ece", "entropy"),
)
