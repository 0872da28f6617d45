"""Mitigations shared by both domains, each written once.

- ``invariance``: MMD penalty between score distributions across bins of a spurious variable
  (Wang et al. 2025). Recommender: the click logit across positions. LLM: the reward score across
  length bins and hint agreement.
- ``sign_split``: PSR / NSR / W-REINFORCE weighting of positive vs negative samples (Zhu et al.
  2025). Recommender: the click loss of clicked vs non-clicked impressions. LLM: policy-gradient
  advantages.
- ``gates``: accept or reject a whole group by a rubric instead of a dense penalty (the DRO idea).
  Recommender: a slate diversity floor. LLM: a length limit and hint copying per rollout group.
- ``anchor``: the share of data from an external anchor, one knob (``mitigations.anchor_share``).
  Recommender: randomized traffic. LLM: gold-judge labels.
"""


def describe(config) -> tuple[str, str]:  # noqa: ANN001
    """(mitigation, bias) tags of a :class:`recsim.config.SimConfig`, for MLflow and tables."""
    m = config.mitigations
    parts = []
    if m.invariance_weight > 0:
        parts.append("invariance-conditional" if m.invariance_conditional else "invariance")
    if m.brier_weight > 0:
        parts.append("brier")
    if m.gate != "none":
        parts.append(m.gate)
    if m.sign_split != "none":
        parts.append(m.sign_split)
    if m.anchor_share:
        parts.append(f"anchor={m.anchor_share:g}")
    if config.domain == "llm":
        c = config.llm
        if c.critique.kind != "none":
            parts.append(f"critique-{c.critique.kind}-{c.critique.use}")
        rm = c.reward_model
        if rm.passes > 1:
            parts.append(f"rm-budget={rm.passes}x{rm.votes}" + ("-meta" if rm.meta_judge else ""))
        bias = f"length_bias={c.labeler.length_bias:g}"
    else:
        bias = "eta=" + "/".join(f"{v:g}" for v in config.behavior.eta.values())
    return ("+".join(parts) or "none"), bias
