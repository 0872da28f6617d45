"""Typed, frozen scenario configuration, validated at the edge.

One :class:`SimConfig` describes one arm of a scenario. Scenarios (Python or YAML, see
:mod:`recsim.scenario`) give a base config plus per-arm deltas; ``--set dotted.key=value`` overrides
any field. Every field has a docstring; :func:`validate` turns pydantic's errors into one line that
names the field, the value received and what is allowed, raised as :class:`ConfigError`.
"""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """Invalid user input (config, override or scenario name); the message is one line."""


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, validate_default=True
    )


class WorldConfig(_Section):
    """Users, items and the latent truth (see :mod:`recsim.world`)."""

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


class BehaviorConfig(_Section):
    """How users examine and click slates (see :mod:`recsim.behavior`)."""

    model: Literal["pbm", "cascade"] = "pbm"
    """'pbm': position-based model, click ~ Bernoulli(theta(k, device) * relevance); 'cascade':
    scan top-down with the same examination decay, stopping after the first click."""
    eta: dict[str, float] = Field(default_factory=lambda: {"mobile": 1.2, "desktop": 0.6})
    """Examination exponent per device: theta(k, device) = (1 / k) ** eta[device]."""

    @model_validator(mode="after")
    def _eta(self) -> BehaviorConfig:
        bad = {k: v for k, v in self.eta.items() if v < 0}
        if bad:
            raise ValueError(f"behavior.eta must be >= 0 for every device, got {bad}")
        return self


class RankerConfig(_Section):
    """The learner that scores candidates (see :mod:`recsim.rankers`)."""

    name: Literal["random", "popularity", "oracle", "mf", "mmoe", "shared_bottom", "single_task"] = "mf"
    """Which ranker: random, popularity (click counts), oracle (true relevance), mf (logistic
    matrix factorization on the logged clicks), mmoe (multi-gate mixture of experts, click and
    satisfaction tasks), shared_bottom (its parameter-matched shared-bottom baseline) or
    single_task (click task only)."""
    dim: int = Field(16, gt=0)
    """Embedding dimension of trainable rankers (per sparse feature)."""
    hidden: int = Field(128, gt=0)
    """Multi-task rankers: width of the shared hidden layer (H)."""
    experts: int = Field(8, gt=0)
    """Multi-task rankers: number of experts (E)."""
    expert_dim: int = Field(32, gt=0)
    """Multi-task rankers: width of each expert (X)."""
    tower_dim: int = Field(16, gt=0)
    """Multi-task rankers: hidden width of each task tower."""
    gate_dropout: float = Field(0.1, ge=0, lt=1)
    """MMoE: probability of zeroing each expert's gate weight in training (renormalized)."""
    position: Literal["none", "feature", "shallow_tower", "obs_dropout", "grad_reversal", "ips", "pal"] = (
        "none"
    )
    """Multi-task rankers: position-bias handling. none; feature (position x device as an input,
    served at position 1); shallow_tower (additive bias tower, dropped at serving); obs_dropout and
    grad_reversal (the shallow tower with Zhang et al. 2023's de-confounding); ips (clicks
    reweighted by 1 / examination); pal (P(seen | position) x P(click | seen, x))."""
    position_dropout: float = Field(0.1, ge=0, le=1)
    """Tower-like modes: probability that the position feature is replaced by 'missing' in training."""
    observation_dropout: float = Field(0.5, ge=0, le=1)
    """obs_dropout: probability that the bias tower's output is zeroed in training."""
    position_lr: float = Field(0.05, gt=0)
    """Adam learning rate of the position channel (bias tower, position embedding, adversary):
    a few parameters that every example updates, whose offsets reach several logits."""
    reversal_weight: float = Field(1.0, ge=0)
    """grad_reversal: weight of the reversed gradient of the position adversary."""
    ips_source: Literal["logged", "estimated"] = "logged"
    """ips: examination probabilities from the log (true theta) or estimated from the click rates
    by (position, device) of the random (exploration) slates seen so far."""
    ips_clip: float = Field(20.0, ge=1)
    """ips: the largest inverse-propensity weight."""
    history_len: int = Field(20, gt=0)
    """Multi-task rankers: length of the user-history bag of recently clicked items (L)."""
    sparse_embeddings: bool = False
    """Multi-task rankers: embedding tables get sparse gradients and Adagrad (at ``embedding_lr``)
    that touches only the rows of each batch, so a step costs the same whatever the table size
    (needed for million-user worlds, and the rule of the sharded tables under ``--distributed``).
    The default trains the tables with the dense layers' Adam."""
    embedding_lr: float = Field(0.05, gt=0)
    """sparse_embeddings: Adagrad learning rate of the embedding tables."""
    serve_bf16: bool = False
    """Multi-task rankers: score candidates under bfloat16 autocast (about 2.5x faster on CPUs
    with AVX512-BF16; logits differ by ~1e-3, so near-ties may order differently)."""
    click_weight: float = Field(1.0, ge=0)
    """Serving score = click_weight * p_click + satisfaction_weight * p_click * p_satisfied."""
    satisfaction_weight: float = Field(1.0, ge=0)
    """See click_weight."""
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
    window: int | None = Field(None, gt=0)
    """Train on the last `window` rounds of logs; None = all rounds so far."""
    prior_clicks: float = Field(1.0, gt=0)
    """Popularity ranker: pseudo-clicks of the Beta prior of its per-item click rate."""
    prior_impressions: float = Field(10.0, gt=0)
    """Popularity ranker: pseudo-impressions of that prior (must exceed prior_clicks)."""

    @property
    def multitask(self) -> bool:
        """The ranker is one of the multi-task networks (mmoe, shared_bottom, single_task)."""
        return self.name in ("mmoe", "shared_bottom", "single_task")

    @property
    def batch(self) -> int:
        """The effective batch size (see ``batch_size``)."""
        if self.batch_size is not None:
            return self.batch_size
        return 4096 if self.multitask else 1024

    @property
    def learning_rate(self) -> float:
        """The effective learning rate (see ``lr``)."""
        if self.lr is not None:
            return self.lr
        return 0.003 if self.multitask else 0.02

    @model_validator(mode="after")
    def _prior(self) -> RankerConfig:
        if self.prior_impressions <= self.prior_clicks:
            raise ValueError(
                "ranker.prior_impressions must be > ranker.prior_clicks, got "
                f"{self.prior_impressions} <= {self.prior_clicks}"
            )
        return self


class PolicyConfig(_Section):
    """How slates are built from scores (see :mod:`recsim.policy`)."""

    slate_size: int = Field(10, gt=0)
    """Positions per slate (K)."""
    n_candidates: int | None = Field(None, gt=0)
    """Candidates scored per user (C); None = all available items. With ``retrieval="uniform"``
    they are drawn uniformly; with ``"two_tower"`` they are retrieved."""
    retrieval: Literal["uniform", "two_tower"] = "uniform"
    """Candidate generation: uniform (C items drawn at random per user) or two_tower (a logistic
    two-tower model retrained each round on the logs, searched through an inverted-file index of
    ``ivf_lists`` k-means lists, ``ivf_probe`` probed per user; see :mod:`recsim.retrieval`), plus
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


class LoopConfig(_Section):
    """The multi-round loop (see :mod:`recsim.loop`)."""

    rounds: int = Field(20, gt=0)
    """Rounds to simulate."""
    active_users: int | None = Field(None, gt=0)
    """Users sampled to act each round (B); None = every user."""
    keep_checkpoints: int = Field(1, gt=0)
    """Per-round checkpoints kept per arm, newest first (``--resume`` needs only the last)."""


class MetricsConfig(_Section):
    """Evaluation settings (see :mod:`recsim.metrics`)."""

    panel_users: int = Field(256, gt=1)
    """Size of the fixed evaluation panel (P) on which ndcg_truth, homogenization and
    rank_stability score every available item (or the ``panel_items`` sample)."""
    panel_items: int | None = Field(None, gt=1)
    """Items the panel scores: None = every available item; n = a fixed uniform sample of n items
    of the first round's catalogue, drawn once per seed (for catalogues too large to score whole
    for every panel user)."""
    ece_bins: int = Field(10, gt=0)
    """Equal-width bins of the expected calibration error."""


class TrackingConfig(_Section):
    """MLflow tracking (see :mod:`recsim.tracking`)."""

    enabled: bool = True
    """Log one parent run per scenario and one nested run per arm."""
    uri: str = "sqlite:///mlflow.db"
    """Tracking URI; the default is an embedded SQLite file in the working directory."""
    experiment: str | None = None
    """MLflow experiment name; None = the scenario's name."""


class LlmConfig(_Section):
    """The LLM-reward domain (see :mod:`recsim.llm`)."""

    n_prompts: int = Field(4096, gt=0)
    """Training prompt pool; each round draws ``batch_prompts`` of them."""
    n_eval_prompts: int = Field(256, gt=0)
    """Fixed evaluation prompts (accuracy, pass@k, calibration, diversity)."""
    prompt_len: int = Field(4, gt=0)
    """Digit tokens per prompt."""
    max_difficulty: int = Field(2, ge=0)
    """Difficulty d in 0..max: the answer sums the first d + 1 digits (at most prompt_len)."""
    n_answers: int = Field(5, gt=1)
    """A: answers (the sum is taken mod A)."""
    hint_wrong: float = Field(0.4, ge=0, le=1)
    """Probability that the user's hint is wrong."""
    conf_bins: int = Field(5, gt=1)
    """C: verbalized confidence bins; stated q = (bin + 0.5) / C."""
    max_elaboration: int = Field(6, ge=0)
    """Most elaboration tokens in a response (the response's length)."""
    hidden: int = Field(64, gt=0)
    """Hidden width of the policy and the reward model (H)."""
    sft_steps: int = Field(150, ge=0)
    """Supervised warm-up steps of the base policy (on gold answers, random confidence and length)."""
    sft_lr: float = Field(3e-3, gt=0)
    """Learning rate of the warm-up."""
    optimizer: Literal["grpo", "best_of_n", "psr", "nsr", "w_reinforce", "none"] = "grpo"
    """How the policy is optimized each round: GRPO, best-of-n selection (no update; round r uses
    n = 2^r), sign-split REINFORCE (PSR, NSR, W-REINFORCE; Zhu et al. 2025) or none."""
    reward: Literal["binary", "rlcr", "reward_model"] = "reward_model"
    """Reward optimized: binary correctness, binary + Brier term (RLCR, Damani et al. 2025), or
    the learned reward model."""
    label_prompts: int = Field(256, gt=0)
    """Prompts sampled each round for the labeler: group_size / 2 pairs each, the reward model's data."""
    batch_prompts: int = Field(64, gt=0)
    """Prompts per policy step (N)."""
    group_size: int = Field(8, gt=1)
    """Samples per prompt (G): the GRPO group and the pairs offered to the labeler."""
    policy_steps: int = Field(8, ge=0)
    """Policy updates per round."""
    policy_lr: float = Field(2e-3, gt=0)
    """Adam learning rate of the policy."""
    advantage: Literal["std", "mean"] = "std"
    """GRPO advantages: (R - mean) / std over the group (Shao et al. 2024), or R - mean
    (Critique-GRPO's choice, Dr. GRPO); Critique-GRPO's mixed groups use the same form."""
    kl_coef: float = Field(0.05, ge=0)
    """GRPO: weight of the per-token KL penalty to the reference policy."""
    w_lambda: float = Field(0.1, ge=0)
    """W-REINFORCE: weight of positive samples."""
    rm_mode: Literal["labeler", "self", "anchored"] = "labeler"
    """Who labels the reward model's pairs: the biased labeler; the reward model itself (no
    external anchor); or the labeler with ``anchor_share`` of pairs labeled by the gold judge."""
    anchor_share: float = Field(0.0, ge=0, le=1)
    """Share of pairs labeled by the frozen gold judge (rm_mode=anchored)."""
    rm_refit: bool = True
    """Retrain the reward model every round (False: only on round 0's base-policy samples)."""
    rm_epochs: int = Field(3, gt=0)
    """Passes over the pair window per round."""
    rm_lr: float = Field(3e-3, gt=0)
    """Adam learning rate of the reward model."""
    rm_window: int | None = Field(None, gt=0)
    """Train the reward model on pairs of the last `rm_window` rounds; None = all."""
    gold_weight: float = Field(4.0, ge=0)
    """Labeler: weight of the correctness difference in its Bradley-Terry logit."""
    length_bias: float = Field(1.5, ge=0)
    """Labeler: weight of the length difference (in units of max_elaboration)."""
    sycophancy_bias: float = Field(1.5, ge=0)
    """Labeler: weight of the difference in agreeing with the user's hint."""
    confidence_bias: float = Field(1.0, ge=0)
    """Labeler: weight of the difference in stated confidence."""
    pass_k_samples: int = Field(64, gt=0)
    """Samples per evaluation prompt for pass@k (k up to this)."""
    hard_share: float = Field(0.0, ge=0, lt=1)
    """Share of hard prompts (training pool and evaluation set): difficulty max_difficulty + 1, on
    which the base policy learned a shortcut that is always wrong (needs max_difficulty + 2 <=
    prompt_len). They carry accuracy_hard, hard_pass_at_k and unsolved_share_hard."""
    unsolved_k: int | None = Field(None, gt=0)
    """unsolved_share: share of the round's training prompts with no success in k samples
    (unbiased from the group's G >= k samples); None = group_size."""
    critique: Literal["none", "binary", "ground_truth", "cot"] = "none"
    """Critique of each failed rollout (GRPO only): "wrong"; + the true answer; + the step that
    went wrong (see recsim.llm.critique)."""
    critique_use: Literal["refine", "hindsight"] = "refine"
    """How the policy learns from critiques: Critique-GRPO refinements, or hindsight distillation
    into per-token advantages."""
    critique_sft: float = Field(0.0, ge=0, lt=1)
    """Share of the base policy's warm-up examples that are refinements (prompt + critique of a
    wrong answer -> the right answer, on ordinary prompts): its skill at following critiques.
    Arms compared on critiques should share it (it shapes the base policy)."""
    refine_gamma: float = Field(0.3, gt=0)
    """Critique-GRPO shaping f(pi) = pi / (pi + gamma) of refinement tokens."""
    refine_keep: int = Field(4, gt=0)
    """Critique-GRPO: refinements per group joining the mixed group (correct ones first)."""
    directive_weight: float = Field(1.0, ge=0)
    """Hindsight: weight of the per-token log-ratio teacher (critique in context) vs student."""
    rm_passes: int = Field(1, gt=0)
    """Reward model's reasoning passes m: the first reads the sequence, each further one applies a
    weight-tied refinement block (attention over the token states) before the score head; trained
    at depths drawn from 1..m. m = 1 is the ordinary reward model."""
    rm_votes: int = Field(1, gt=0)
    """Reward model's sampled judgments k (needs rm_passes > 1): each pass sees a random subset of
    the token states; scores are averaged (or weighted by the meta-judge)."""
    rm_vote_dropout: float = Field(0.25, ge=0, lt=1)
    """Share of token states a judgment does not see (training and votes)."""
    rm_meta_judge: bool = False
    """A learned meta-judge weighting the k judgments (softmax over a score of each judgment's
    state), trained through the Bradley-Terry loss of the aggregate."""

    @model_validator(mode="after")
    def _difficulty(self) -> LlmConfig:
        if self.max_difficulty + 1 > self.prompt_len:
            raise ValueError(
                f"llm.max_difficulty + 1 must be <= llm.prompt_len ({self.prompt_len}), "
                f"got {self.max_difficulty}"
            )
        if self.hard_share > 0 and self.max_difficulty + 2 > self.prompt_len:
            raise ValueError(
                f"llm.hard_share > 0 needs llm.max_difficulty + 2 <= llm.prompt_len ({self.prompt_len}), "
                f"got max_difficulty {self.max_difficulty}"
            )
        if self.unsolved_k is not None and self.unsolved_k > self.group_size:
            raise ValueError(
                f"llm.unsolved_k must be <= llm.group_size ({self.group_size}), got {self.unsolved_k}"
            )
        if self.critique != "none" and self.optimizer != "grpo":
            raise ValueError(f"llm.critique needs llm.optimizer grpo, got {self.optimizer}")
        if self.rm_votes > 1 and self.rm_passes == 1:
            raise ValueError("llm.rm_votes > 1 needs llm.rm_passes > 1 (judgments differ in the passes)")
        return self


class MitigationConfig(_Section):
    """Mitigations shared by both domains (see :mod:`recsim.mitigations`)."""

    invariance_weight: float = Field(0.0, ge=0)
    """Weight of the MMD invariance penalty (0 = off). Recommender: the multi-task ranker's click
    logit across positions. LLM: reward-model scores across length bins and hint agreement."""
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


class SimConfig(_Section):
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
    ranker: RankerConfig = RankerConfig()
    policy: PolicyConfig = PolicyConfig()
    loop: LoopConfig = LoopConfig()
    metrics: MetricsConfig = MetricsConfig()
    tracking: TrackingConfig = TrackingConfig()
    llm: LlmConfig = LlmConfig()
    mitigations: MitigationConfig = MitigationConfig()

    @model_validator(mode="before")
    @classmethod
    def _anchor(cls, data: Any) -> Any:
        """Map mitigations.anchor_share onto the domain's own anchor setting."""
        if not isinstance(data, dict):
            return data
        share = (data.get("mitigations") or {}).get("anchor_share")
        if not isinstance(share, int | float) or isinstance(share, bool):
            return data
        if data.get("domain", "recsys") == "llm":
            return deep_merge(data, {"llm": {"anchor_share": share, "rm_mode": "anchored"}})
        return deep_merge(data, {"policy": {"exploration_share": share}})

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
        if self.mitigations.sign_split != "none" and self.ranker.position in ("ips", "pal"):
            raise ValueError(
                "mitigations.sign_split weights a click cross-entropy: ranker.position must be none, "
                f"feature, shallow_tower, obs_dropout or grad_reversal, got {self.ranker.position}"
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
        if self.device == "cuda" and self.domain != "recsys":
            raise ValueError("device='cuda' runs the recommender domain only; the llm domain runs on 'cpu'")
        if self.metrics.panel_users > w.n_users:
            raise ValueError(
                f"metrics.panel_users must be <= world.n_users ({w.n_users}), got {self.metrics.panel_users}"
            )
        return self


# --- building configs from nested dicts and overrides ------------------------------------------


def deep_merge(base: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``base`` with ``delta`` merged in recursively (delta wins)."""
    out = dict(base)
    for key, value in delta.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"policy.epsilon=0.1"`` -> ``(["policy", "epsilon"], 0.1)``; values are parsed as YAML.

    >>> parse_override("loop.rounds=5")
    (['loop', 'rounds'], 5)
    >>> parse_override("world.devices={a: 1.0}")
    (['world', 'devices'], {'a': 1.0})
    """
    key, sep, raw = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(path):
        raise ConfigError(f"--set expects dotted.key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({reason})") from None
    return path, value


def nest(path: list[str], value: Any) -> dict[str, Any]:
    """``(["a", "b"], 1)`` -> ``{"a": {"b": 1}}``."""
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names allowed at the parent of ``loc`` in :class:`SimConfig`."""
    model: Any = SimConfig
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return []
        model = field.annotation
    return sorted(model.model_fields)


def _format_error(err: dict[str, Any]) -> str:
    loc = tuple(p for p in err["loc"] if p != "__root__")
    where = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc)
        return f"{where}: unknown key (allowed: {', '.join(allowed)})"
    msg = err["msg"].removeprefix("Value error, ")
    if not where:
        return msg
    return f"{where}: {msg} (got {err.get('input')!r})"


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``data`` with each ``dotted.key=value`` override merged in, in order."""
    for text in overrides:
        path, value = parse_override(text)
        data = deep_merge(data, nest(path, value))
    return data


def describe_errors(exc: ValidationError) -> str:
    """All of a pydantic error's problems on one line."""
    return "; ".join(_format_error(e) for e in exc.errors(include_url=False))


def validate(data: dict[str, Any], arm: str | None = None) -> SimConfig:
    """Build a :class:`SimConfig`, raising :class:`ConfigError` with one line on bad input."""
    try:
        return SimConfig.model_validate(data)
    except ValidationError as exc:
        lines = describe_errors(exc)
        prefix = f"invalid config for arm '{arm}': " if arm else "invalid config: "
        raise ConfigError(prefix + lines) from None


def flatten(config: BaseModel | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys -> leaf values (for MLflow params and tables)."""
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in ("devices", "eta"):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
