"""The config of one arm: the sections of both domains and the shared ones, composed.

One :class:`SimConfig` describes one arm of a scenario. Scenarios (Python or YAML, see
:mod:`recsim.scenario`) give a base config plus per-arm deltas; ``--set dotted.key=value`` overrides
any field. Sections live with what they configure (:mod:`recsim.core.config` for the loop,
metrics and tracking; :mod:`recsim.recsys.config` and the ranker kinds; :mod:`recsim.llm.config`;
:mod:`recsim.mitigations.config`). Names that moved keep working through aliases
(:func:`canonical`). :func:`validate` turns pydantic's errors into one line that names the field,
the value received and what is allowed, raised as :class:`ConfigError`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import SerializeAsAny, ValidationError, model_validator

from recsim.core.config import (
    ConfigError,
    LoopConfig,
    MetricsConfig,
    Section,
    TrackingConfig,
    apply_overrides,
    deep_merge,
    describe_errors,
    flatten,
    nest,
    parse_override,
)
from recsim.core.domain import DOMAINS
from recsim.llm.config import LlmConfig
from recsim.llm.config import canonical as canonical_llm
from recsim.mitigations.config import MitigationConfig
from recsim.recsys.config import BehaviorConfig, PolicyConfig, RankerConfig, WorldConfig, ranker_section

__all__ = [
    "BehaviorConfig",
    "ConfigError",
    "LlmConfig",
    "LoopConfig",
    "MetricsConfig",
    "MitigationConfig",
    "PolicyConfig",
    "RankerConfig",
    "SimConfig",
    "TrackingConfig",
    "WorldConfig",
    "apply_overrides",
    "canonical",
    "deep_merge",
    "describe_errors",
    "flatten",
    "nest",
    "parse_override",
    "validate",
]

DOMAINS.register("recsys", "recsim.recsys.domain:RecsysDomain")
DOMAINS.register("llm", "recsim.llm.domain:LlmDomain")


def canonical(data: dict[str, Any]) -> dict[str, Any]:
    """A (partial) arm config with every alias of a moved field at its present place.

    >>> canonical({"llm": {"group_size": 16}, "seed": 1})
    {'llm': {'optimization': {'group_size': 16}}, 'seed': 1}
    """
    if isinstance(data.get("llm"), dict):
        data = {**data, "llm": canonical_llm(data["llm"])}
    return data


class SimConfig(Section):
    """One arm of a scenario: everything needed to run it, and nothing else."""

    seed: int = 0
    """Root seed; every random stream derives from (seed, round, stream)."""
    domain: Literal["recsys", "llm"] = "recsys"
    """Which domain the arm simulates: the recommender loop or the LLM-reward loop."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Torch device of the recommender loop: world, behaviour, retrieval, training and scoring
    (``cuda``: the current GPU). The world and initial weights are drawn on the CPU either way;
    the per-round draws come from generators on the device, so a GPU run follows other random
    streams than a CPU run with the same seed. The LLM-reward domain runs on the CPU."""
    world: WorldConfig = WorldConfig()
    behavior: BehaviorConfig = BehaviorConfig()
    ranker: SerializeAsAny[RankerConfig] = RankerConfig()
    """The learner: its kind's own section, picked by ``ranker.name`` (see :mod:`recsim.recsys.rankers`)."""
    policy: PolicyConfig = PolicyConfig()
    loop: LoopConfig = LoopConfig()
    metrics: MetricsConfig = MetricsConfig()
    tracking: TrackingConfig = TrackingConfig()
    llm: LlmConfig = LlmConfig()
    mitigations: MitigationConfig = MitigationConfig()

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        """Flat aliases into their sections; mitigations.anchor_share onto the domain's own anchor
        setting; the ranker section as its kind's config."""
        if not isinstance(data, dict):
            return data
        data = canonical(data)
        share = (data.get("mitigations") or {}).get("anchor_share")
        if isinstance(share, int | float) and not isinstance(share, bool):
            if data.get("domain", "recsys") == "llm":
                anchor = {"reward_model": {"anchor_share": share, "mode": "anchored"}}
                data = deep_merge(data, {"llm": anchor})
            else:
                data = deep_merge(data, {"policy": {"exploration_share": share}})
        ranker = data.get("ranker", {})
        if not isinstance(ranker, RankerConfig):
            data = {**data, "ranker": ranker_section(ranker if ranker is not None else {})}
        return data

    @model_validator(mode="after")
    def _cross(self) -> SimConfig:
        w, p = self.world, self.policy
        if p.slate_size > w.n_items:
            raise ValueError(f"policy.slate_size must be <= world.n_items ({w.n_items}), got {p.slate_size}")
        if p.n_candidates is not None and not p.slate_size <= p.n_candidates <= w.n_items:
            raise ValueError(
                f"policy.n_candidates must lie in [policy.slate_size={p.slate_size}, "
                f"world.n_items={w.n_items}] or be null, got {p.n_candidates}"
            )
        if set(self.behavior.eta) != set(w.devices):
            raise ValueError(
                f"behavior.eta must give one exponent per device of world.devices "
                f"{sorted(w.devices)}, got {sorted(self.behavior.eta)}"
            )
        if self.loop.active_users is not None and self.loop.active_users > w.n_users:
            raise ValueError(
                f"loop.active_users must be <= world.n_users ({w.n_users}), got {self.loop.active_users}"
            )
        position = getattr(self.ranker, "position", "none")
        if self.mitigations.sign_split != "none" and position in ("ips", "pal"):
            raise ValueError(
                "mitigations.sign_split weights a click cross-entropy: ranker.position must be none, "
                f"feature, shallow_tower, obs_dropout or grad_reversal, got {position}"
            )
        if p.retrieval == "two_tower":
            if p.n_candidates is None or p.n_candidates <= p.explore_candidates:
                raise ValueError(
                    "policy.retrieval='two_tower' needs policy.n_candidates > policy.explore_candidates "
                    f"({p.explore_candidates}), got {p.n_candidates}"
                )
            if p.ivf_probe > p.ivf_lists or p.ivf_lists > w.n_items:
                raise ValueError(
                    f"policy.ivf_probe must be <= policy.ivf_lists <= world.n_items ({w.n_items}), got "
                    f"ivf_probe={p.ivf_probe}, ivf_lists={p.ivf_lists}"
                )
        if self.metrics.panel_items is not None and self.metrics.panel_items > w.n_items:
            raise ValueError(
                f"metrics.panel_items must be <= world.n_items ({w.n_items}) or null, "
                f"got {self.metrics.panel_items}"
            )
        if self.loop.feedback == "random" and self.domain != "recsys":
            raise ValueError(
                "loop.feedback='random' (uniformly random slates) runs the recommender domain only; "
                "the llm domain's open loop is 'open' (the reward model on the base policy's samples)"
            )
        if self.device == "cuda" and self.domain != "recsys":
            raise ValueError("device='cuda' runs the recommender domain only; the llm domain runs on 'cpu'")
        if self.metrics.panel_users > w.n_users:
            raise ValueError(
                f"metrics.panel_users must be <= world.n_users ({w.n_users}), got {self.metrics.panel_users}"
            )
        return self


def validate(data: dict[str, Any], arm: str | None = None) -> SimConfig:
    """Build a :class:`SimConfig`, raising :class:`ConfigError` with one line on bad input."""
    try:
        return SimConfig.model_validate(data)
    except ValidationError as exc:
        lines = describe_errors(exc, SimConfig)
        prefix = f"invalid config for arm '{arm}': " if arm else "invalid config: "
        raise ConfigError(prefix + lines) from None
