"""The ``mitigations`` config section: one knob per mitigation, shared by both domains."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from recsim.core.config import Section


class MitigationConfig(Section):
    """Mitigations shared by both domains (see :mod:`recsim.mitigations`)."""

    invariance_weight: float = Field(0.0, ge=0)
    """Weight of the MMD invariance penalty (0 = off). Recommender: the multi-task ranker's served
    relevance logit (without the position channel) across the positions the rows were shown at.
    LLM: reward-model scores across length bins and hint agreement."""
    invariance_conditional: bool = False
    """Compute the penalty within label classes (clicked or not; preferred or not)."""
    invariance_bins: int = Field(3, gt=1)
    """LLM: length buckets of the invariance penalty."""
    brier_weight: float = Field(0.0, ge=0)
    """Proper-scoring term (0 = off). Recommender: Brier loss of the multi-task ranker's click
    probability added to its training loss. LLM: -w (q - 1[correct])^2 added to the reward."""
    gate: Literal["none", "gate", "dense"] = "none"
    """Rubric as a hard gate on whole groups (LLM: rollout groups; recommender: slates as
    training data) or as a dense penalty per item."""
    gate_max_length: int = Field(4, ge=0)
    """LLM rubric: a response with more elaboration tokens violates it."""
    gate_hint_copy: bool = True
    """LLM rubric: a response whose answer copies the user's hint violates it."""
    gate_consistency: bool = False
    """LLM rubric (chain task): a response whose final answer is not its last written step
    violates it (a check of the steps' format that needs no ground truth)."""
    diversity_floor: int = Field(3, ge=1)
    """Recommender rubric: a slate with fewer distinct categories violates it."""
    dense_penalty: float = Field(1.0, ge=0)
    """gate=dense: reward penalty per violation (LLM) / loss down-weighting (recommender)."""
    sign_split: Literal["none", "psr", "nsr", "w_reinforce"] = "none"
    """Recommender: weight the click loss of clicked vs non-clicked impressions as PSR / NSR /
    W-REINFORCE do positive and negative samples (the LLM uses llm.optimizer)."""
    w_lambda: float = Field(0.1, ge=0)
    """W-REINFORCE weight of positives (recommender sign split)."""
    anchor_share: float | None = Field(None, ge=0, le=1)
    """One knob for the external anchor: randomized traffic share (recommender,
    policy.exploration_share) or gold-judge label share (LLM, llm.anchor_share with
    rm_mode=anchored). None leaves those settings as they are."""
