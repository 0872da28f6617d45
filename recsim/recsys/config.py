"""Config sections of the recommender domain: the world, the click model and the slate policy.

The ``ranker`` section is its kind's own: :data:`RANKERS` maps ``ranker.name`` to a
:class:`RankerKind` (its config section, how to build it, whether ``--distributed`` can train it).
A kind is one file in :mod:`recsim.recsys.rankers` (or the user's own module) and one
registration line. ``--set ranker.KEY=VALUE`` accepts exactly the fields of the named kind (a
field of another kind is ignored, as a scenario's base may set fields for arms that use another
ranker; a field of no kind is refused). Evaluation settings shared with the other domain are in
:class:`recsim.core.config.MetricsConfig`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from recsim.core.config import Section, describe_errors
from recsim.core.registry import Registry

if TYPE_CHECKING:
    from recsim.config import SimConfig
    from recsim.recsys.rankers.base import Ranker
    from recsim.recsys.world import World


class WorldConfig(Section):
    """Users, items and the latent truth (see :mod:`recsim.recsys.world`)."""

    n_users: int = Field(2000, gt=0)
    """Users in the world (U)."""
    n_items: int = Field(1000, gt=1)
    """Items in the catalogue at round 0."""
    new_items_per_round: int = Field(0, ge=0)
    """Items that join the catalogue at the start of each round after round 0."""
    dim: int = Field(16, gt=0)
    """Dimension of the latent taste / appeal factors (D)."""
    n_clusters: int = Field(8, gt=0)
    """Clusters of users and items; an item's category is its cluster."""
    cluster_spread: float = Field(0.6, ge=0)
    """Spread of members around their cluster centre (0 = every member at its centre)."""
    affinity_scale: float = Field(3.0, gt=0)
    """Weight of the user-item affinity (cosine of unit factors) in the click and satisfaction logits."""
    popularity_scale: float = Field(0.8, ge=0)
    """Std of the items' log-popularity prior, added to the click logit only."""
    base_logit: float = -1.5
    """Intercept of the true click logit."""
    satisfaction_logit: float = -0.5
    """Intercept of the true satisfaction logit."""
    satisfaction_correlation: float = Field(0.5, ge=-1, le=1)
    """Cosine between an item's click appeal and its satisfaction appeal (1 = same objective)."""
    drift_rate: float = Field(0.0, ge=0, le=1)
    """Step of a user's taste toward the mean appeal of the items they clicked (0 = static)."""
    devices: dict[str, float] = Field(default_factory=lambda: {"mobile": 0.6, "desktop": 0.4})
    """Device name -> share of users on it (shares must sum to 1)."""
    source: str | None = None
    """A world fitted to an interaction log (a folder written by ``recsim world fit``; see
    :mod:`recsim.recsys.worldfit`); None = drawn. A fitted world sets n_users, n_items, dim,
    n_clusters (its categories), affinity_scale, base_logit and satisfaction_logit from its card,
    whatever else gives them; cluster_spread, popularity_scale and satisfaction_correlation do not
    apply; drift_rate and devices do."""

    @model_validator(mode="before")
    @classmethod
    def _fitted(cls, data: Any) -> Any:
        """A fitted world's fields from its card (ValueError when the folder is not a world)."""
        if not isinstance(data, dict) or not isinstance(data.get("source"), str):
            return data  # no source, or one of the wrong type (refused by the field's type)
        from recsim.recsys.worldfit import config_fields, read_card

        if data.get("new_items_per_round"):
            raise ValueError(
                "world.new_items_per_round must be 0 with world.source (a fitted catalogue is fixed)"
            )
        return {**data, **config_fields(read_card(data["source"]))}

    @model_validator(mode="after")
    def _shares(self) -> WorldConfig:
        if not self.devices:
            raise ValueError("world.devices must name at least one device")
        bad = {k: v for k, v in self.devices.items() if not 0 <= v <= 1}
        if bad:
            raise ValueError(f"world.devices shares must lie in [0, 1], got {bad}")
        total = sum(self.devices.values())
        if abs(total - 1) > 1e-6:
            raise ValueError(f"world.devices shares must sum to 1, got {total:g}")
        return self


class BehaviorConfig(Section):
    """How users examine and click slates (see :mod:`recsim.recsys.behavior`)."""

    model: str = "pbm"
    """A registered click model (:data:`recsim.recsys.behavior.CLICK_MODELS`): 'pbm', the
    position-based model, click ~ Bernoulli(theta(k, device) * relevance); 'cascade': scan top-down
    with the same examination decay, stopping after the first click; 'logit': the position as an
    additive offset log theta(k, device) to the click logit; 'choice': exactly one item
    per slate, chosen with probability proportional to theta(k, device) * relevance."""
    eta: dict[str, float] = Field(default_factory=lambda: {"mobile": 1.2, "desktop": 0.6})
    """Examination exponent per device: theta(k, device) = (1 / k) ** eta[device]."""

    @field_validator("model")
    @classmethod
    def _registered(cls, name: str) -> str:
        from recsim.recsys.behavior import CLICK_MODELS

        if name not in CLICK_MODELS:
            raise ValueError(f"must be one of {', '.join(CLICK_MODELS.names())}")
        return name

    @model_validator(mode="after")
    def _eta(self) -> BehaviorConfig:
        bad = {k: v for k, v in self.eta.items() if v < 0}
        if bad:
            raise ValueError(f"behavior.eta must be >= 0 for every device, got {bad}")
        return self


class PolicyConfig(Section):
    """How slates are built from scores (see :mod:`recsim.recsys.policy`)."""

    slate_size: int = Field(10, gt=0)
    """Positions per slate (K)."""
    n_candidates: int | None = Field(None, gt=0)
    """Candidates scored per user (C); None = all available items. With ``retrieval="uniform"``
    they are drawn uniformly; with ``"two_tower"`` they are retrieved."""
    retrieval: Literal["uniform", "two_tower"] = "uniform"
    """Candidate generation: uniform (C items drawn at random per user) or two_tower (a logistic
    two-tower model retrained each round on the logs, searched through an inverted-file index of
    ``ivf_lists`` k-means lists, ``ivf_probe`` probed per user; see :mod:`recsim.recsys.retrieval`), plus
    ``explore_candidates`` uniform ones."""
    explore_candidates: int = Field(0, ge=0)
    """two_tower: candidates per user drawn uniformly from the catalogue instead of retrieved."""
    ivf_lists: int = Field(256, gt=0)
    """two_tower: k-means lists of the inverted-file index over the item embeddings."""
    ivf_probe: int = Field(8, gt=0)
    """two_tower: lists searched per user (the ones whose centroids score highest)."""
    retriever_dim: int = Field(32, gt=0)
    """two_tower: embedding dimension of the retrieval towers."""
    epsilon: float = Field(0.0, ge=0, le=1)
    """Epsilon-greedy: probability that a user's slate this round is a uniformly random one."""
    exploration_share: float = Field(0.0, ge=0, le=1)
    """Share of users in the randomized bucket: a fixed set of users always served random slates."""
    startup_rounds: int = Field(1, ge=0)
    """Rounds served uniformly at random before the ranker decides (the start-up logs)."""
    repeat_consumption: bool = True
    """False: an item a user has clicked is never shown to that user again, by any arm or by the
    ideal recommender of ``homogenization`` (Chaney et al. 2018's users interact with an item at
    most once; T-RECS ``repeated_items=False``). True: items may be shown and clicked again."""
    logger: Literal["popularity", "oracle"] = "popularity"
    """With ``loop.feedback="open"``: the fixed logger whose slates are logged and shown, the same
    for every arm of a seed with the same ``ranker.window`` and exploration settings (it fits on
    its own logs: ``popularity`` ranks by clicks in that window; ``oracle`` by true relevance, a
    logger that ranks perfectly)."""
    log_candidates: bool = False
    """Also log each slate's candidate set and their true relevance at the round (list columns
    ``candidates`` and ``candidate_relevance`` on the slate's position-1 row), which off-policy
    evaluation needs (``recsim export obp``, the ``ope`` scenario); C values per slate."""


class RankerConfig(Section):
    """Fields every ranker kind has."""

    name: str = "mf"
    """Which ranker (registered kinds: see ``recsim.recsys.rankers.RANKERS``)."""
    window: int | None = Field(None, gt=0)
    """Fit on the last `window` rounds of logs; None = all rounds so far."""

    @property
    def multitask(self) -> bool:
        """The ranker is one of the multi-task networks (mmoe, shared_bottom, single_task)."""
        return False


class TrainableConfig(RankerConfig):
    """Fields of rankers trained by gradient steps on the logged clicks."""

    default_batch: ClassVar[int] = 1024
    default_lr: ClassVar[float] = 0.02

    dim: int = Field(16, gt=0)
    """Embedding dimension (per sparse feature)."""
    epochs: int = Field(2, gt=0)
    """Passes over the training window per round."""
    batch_size: int | None = Field(None, gt=0)
    """Impressions per optimizer step; None = 1024 for mf, 4096 for the multi-task rankers (whose
    dense layers use the machine better on larger batches; see ``recsim bench``)."""
    lr: float | None = Field(None, gt=0)
    """Adam learning rate; None = 0.02 for mf, 0.003 for the multi-task rankers."""
    weight_decay: float = Field(1e-6, ge=0)
    """Adam weight decay (L2)."""
    warm_start: bool = True
    """Continue from last round's parameters (True) or retrain from a fresh init each round."""

    @property
    def batch(self) -> int:
        """The effective batch size (see ``batch_size``)."""
        return self.batch_size if self.batch_size is not None else self.default_batch

    @property
    def learning_rate(self) -> float:
        """The effective learning rate (see ``lr``)."""
        return self.lr if self.lr is not None else self.default_lr


@dataclass(frozen=True)
class RankerKind:
    """A registered ranker kind.

    Attributes:
        config: its config section (``name`` a Literal of the names it answers to).
        build: ``build(config, world, dist) -> Ranker``, sized for every item the world will have.
        distributed: why ``--distributed`` cannot run it (completing "ranker.name=NAME ..."), or
            None when it can; a function of the arm's ranker section.
    """

    config: type[RankerConfig]
    build: Callable[[SimConfig, World, Any], Ranker]
    distributed: Callable[[RankerConfig], str | None] = lambda rc: "has no sharded training"


#: ranker.name -> its kind. A kind answering to several names is registered under each; the
#: built-in kinds are registered by path (imported when first used).
RANKERS: Registry[RankerKind] = Registry("ranker")
RANKERS.register("random", "recsim.recsys.rankers.baselines:RANDOM")
RANKERS.register("popularity", "recsim.recsys.rankers.baselines:POPULARITY")
RANKERS.register("oracle", "recsim.recsys.rankers.baselines:ORACLE")
RANKERS.register("mf", "recsim.recsys.rankers.mf:KIND")
for _name in ("mmoe", "shared_bottom", "single_task"):
    RANKERS.register(_name, "recsim.recsys.rankers.multitask:KIND")


def register_ranker(
    names: str | tuple[str, ...],
    config: type[RankerConfig],
    build: Callable[[SimConfig, World, Any], Ranker],
    distributed: Callable[[RankerConfig], str | None] | None = None,
) -> None:
    """Register a ranker kind under each of ``names`` (one line in the kind's file)."""
    kind = RankerKind(config, build) if distributed is None else RankerKind(config, build, distributed)
    for name in (names,) if isinstance(names, str) else names:
        RANKERS.register(name, kind)


def ranker_section(data: Any) -> RankerConfig:
    """The ``ranker`` section as its kind's config: ``data`` a mapping (``name`` defaults to mf).

    Keys of other registered kinds are dropped (a scenario's base may set them for other arms);
    unknown keys and bad values raise :class:`ValueError` naming ``ranker.KEY``.
    """
    if isinstance(data, RankerConfig):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"ranker: expected a mapping, got {data!r}")
    name = data.get("name", "mf")
    if not isinstance(name, str) or name not in RANKERS:
        raise ValueError(f"ranker.name must be one of {', '.join(RANKERS.names())}; got {name!r}")
    config = RANKERS.get(name).config
    owner = {f: kind.config for _, kind in RANKERS.items() for f in kind.config.model_fields}
    kept = {k: v for k, v in data.items() if k in config.model_fields or k not in owner}
    for key in data.keys() - kept.keys():  # another kind's field: ignored, but a bad value is refused
        other = owner[key]
        _checked(other, {"name": other.model_fields["name"].default, key: data[key]}, name, only=key)
    return _checked(config, {**kept, "name": name}, name)


def _checked(config: type[RankerConfig], data: dict[str, Any], name: str, only: str | None = None) -> Any:
    """``config`` validated from ``data``; errors (of field ``only``, if given) as one ValueError
    line with fields prefixed ``ranker.``."""
    from pydantic import ValidationError

    try:
        return config.model_validate(data)
    except ValidationError as exc:
        errors = [e for e in exc.errors() if only is None or tuple(e["loc"]) == (only,)]
        if not errors:
            return None
        text = describe_errors(ValidationError.from_exception_data(exc.title, errors), config)
        text = text.replace("unknown key (allowed:", f"unknown key for ranker.name={name} (allowed:")
        parts = (p if p.startswith("ranker.") else f"ranker.{p}" for p in text.split("; "))
        raise ValueError("; ".join(parts)) from None
