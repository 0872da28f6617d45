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
