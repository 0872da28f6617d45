"""Config of the LLM-reward domain, one section per concern (see :mod:`recsim.llm`).

``--set llm.SECTION.KEY=VALUE`` sets a field; the flat names of earlier versions
(``llm.group_size``, ``llm.rm_passes``, ...) still work through :data:`ALIASES`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from recsim.core.config import Section

#: flat field name of earlier versions -> (section, field) now.
ALIASES: dict[str, tuple[str, str]] = {
    "n_prompts": ("task", "n_prompts"),
    "n_eval_prompts": ("task", "n_eval_prompts"),
    "prompt_len": ("task", "prompt_len"),
    "max_difficulty": ("task", "max_difficulty"),
    "n_answers": ("task", "n_answers"),
    "hint_wrong": ("task", "hint_wrong"),
    "conf_bins": ("task", "conf_bins"),
    "max_elaboration": ("task", "max_elaboration"),
    "hard_share": ("task", "hard_share"),
    "hidden": ("policy", "hidden"),
    "sft_steps": ("policy", "sft_steps"),
    "sft_lr": ("policy", "sft_lr"),
    "optimizer": ("optimization", "optimizer"),
    "reward": ("optimization", "reward"),
    "batch_prompts": ("optimization", "batch_prompts"),
    "group_size": ("optimization", "group_size"),
    "policy_steps": ("optimization", "steps"),
    "policy_lr": ("optimization", "lr"),
    "advantage": ("optimization", "advantage"),
    "kl_coef": ("optimization", "kl_coef"),
    "w_lambda": ("optimization", "w_lambda"),
    "label_prompts": ("labeler", "label_prompts"),
    "initial_prompts": ("labeler", "initial_prompts"),
    "gold_weight": ("labeler", "gold_weight"),
    "length_bias": ("labeler", "length_bias"),
    "sycophancy_bias": ("labeler", "sycophancy_bias"),
    "confidence_bias": ("labeler", "confidence_bias"),
    "rm_mode": ("reward_model", "mode"),
    "anchor_share": ("reward_model", "anchor_share"),
    "rm_refit": ("reward_model", "refit"),
    "rm_epochs": ("reward_model", "epochs"),
    "rm_lr": ("reward_model", "lr"),
    "rm_window": ("reward_model", "window"),
    "rm_passes": ("reward_model", "passes"),
    "rm_votes": ("reward_model", "votes"),
    "rm_vote_dropout": ("reward_model", "vote_dropout"),
    "rm_meta_judge": ("reward_model", "meta_judge"),
    "critique": ("critique", "kind"),
    "critique_use": ("critique", "use"),
    "critique_sft": ("critique", "sft"),
    "refine_gamma": ("critique", "refine_gamma"),
    "refine_keep": ("critique", "refine_keep"),
    "directive_weight": ("critique", "directive_weight"),
    "pass_k_samples": ("evaluation", "pass_k_samples"),
    "unsolved_k": ("evaluation", "unsolved_k"),
}


#: the small preset of the LLM scenarios (``recsim run NAME --quick``): a few seconds a round.
QUICK = (
    "llm.task.n_prompts=1024",
    "llm.task.n_eval_prompts=64",
    "llm.labeler.label_prompts=64",
    "llm.labeler.initial_prompts=512",
    "llm.optimization.batch_prompts=32",
    "llm.evaluation.pass_k_samples=16",
    "llm.policy.sft_steps=300",
    "loop.rounds=4",
)

#: defaults that depend on the task kind: kind -> field -> {section: value} (set where None).
BY_KIND = {
    "chain": {"sft_steps": {"policy": 900}, "n_eval_prompts": {"task": 128}},
    "sum": {"sft_steps": {"policy": 150}, "n_eval_prompts": {"task": 256}},
}


class TaskConfig(Section):
    """The task family: prompts with a hidden answer, a difficulty and a user hint, and the
    response format. Two kinds: ``chain`` (multi-step computations, :mod:`recsim.llm.chain`) and
    ``sum`` (one answer token, :mod:`recsim.llm.tasks`)."""

    kind: Literal["chain", "sum"] = "chain"
    """chain: a prompt defines a chain of operations on values mod n_values; the response writes
    each intermediate result, then the answer, its confidence, a framing and padding (the simulator
    knows the first wrong step). sum: the answer is a sum of digits mod n_answers, written as one
    token (prompt_len, max_difficulty and n_answers apply to it only)."""
    n_values: int = Field(56, ge=10)
    """chain: M, the values (and answers) mod which the chain is computed (operands are 1..9)."""
    max_steps: int = Field(4, gt=0)
    """chain: difficulty d = steps in 1..max_steps (hard prompts: max_steps + 1)."""
    concepts: int = Field(2, gt=1)
    """chain: topics a prompt can have and a response can adopt as its framing."""
    n_prompts: int = Field(4096, gt=0)
    """Training prompt pool; each round draws ``batch_prompts`` of them."""
    n_eval_prompts: int | None = Field(None, gt=0)
    """Fixed evaluation prompts (accuracy, pass@k, calibration, diversity); None = the task's
    default (chain 128, sum 256), filled in when the config is validated."""
    prompt_len: int = Field(4, gt=0)
    """sum: digit tokens per prompt."""
    max_difficulty: int = Field(2, ge=0)
    """sum: difficulty d in 0..max: the answer sums the first d + 1 digits (at most prompt_len)."""
    n_answers: int = Field(5, gt=1)
    """sum: A, the answers (the sum is taken mod A)."""
    hint_wrong: float = Field(0.4, ge=0, le=1)
    """Probability that the user's hint is wrong."""
    conf_bins: int = Field(5, gt=1)
    """C: verbalized confidence bins; stated q = (bin + 0.5) / C."""
    max_elaboration: int = Field(6, ge=0)
    """Most elaboration tokens in a response (the response's length)."""
    hard_share: float = Field(0.0, ge=0, lt=1)
    """Share of hard prompts (training pool and evaluation set), on which the base policy learned a
    shortcut that is always wrong. chain: max_steps + 1 steps, the last one skipped. sum:
    difficulty max_difficulty + 1, its last digit left out (needs max_difficulty + 2 <=
    prompt_len). They carry accuracy_hard, hard_pass_at_k and unsolved_share_hard."""


class BasePolicyConfig(Section):
    """The policy network and its supervised warm-up (the base policy, frozen as the reference)."""

    hidden: int = Field(64, gt=0)
    """Hidden width of the policy and the reward model (H)."""
    sft_steps: int | None = Field(None, ge=0)
    """Supervised warm-up steps of the base policy (on gold answers, random confidence and length);
    None = the task's default (chain 900, sum 150), filled in when the config is validated."""
    sft_lr: float = Field(3e-3, gt=0)
    """Learning rate of the warm-up."""
    sft_sycophancy: float = Field(0.0, ge=0, le=1)
    """chain: share of the warm-up's examples that answer AGREE (the user's hint, "as you said"),
    whatever their steps gave: the base policy's own tendency to defer, which a biased reward can
    amplify. The warm-up's hints are drawn uniformly, so they carry nothing about the answer. At 0
    the base policy never defers and no reward can teach it to (it never samples AGREE); above 0,
    pass@k also counts the hint's right answers (AGREE is sampled at large k)."""


class OptimizationConfig(Section):
    """How the policy is optimized each round, and against which reward."""

    optimizer: Literal["grpo", "best_of_n", "psr", "nsr", "w_reinforce", "none"] = "grpo"
    """How the policy is optimized each round: GRPO, best-of-n selection (no update; round r uses
    n = 2^r), sign-split REINFORCE (PSR, NSR, W-REINFORCE; Zhu et al. 2025) or none."""
    reward: Literal["binary", "rlcr", "reward_model", "process"] = "reward_model"
    """Reward optimized: binary correctness, binary + Brier term (RLCR, Damani et al. 2025), the
    learned reward model, or (chain task, GRPO) a process reward: step j earns 1 while no step up
    to it is wrong, normalized over the group's steps, each token's advantage the sum of the
    normalized rewards of its step and the later ones (process supervision, Shao et al. 2024)."""
    batch_prompts: int = Field(64, gt=0)
    """Prompts per policy step (N)."""
    group_size: int = Field(8, gt=1)
    """Samples per prompt (G): the GRPO group and the pairs offered to the labeler."""
    steps: int = Field(8, ge=0)
    """Policy updates per round."""
    lr: float = Field(2e-3, gt=0)
    """Adam learning rate of the policy."""
    advantage: Literal["std", "mean"] = "std"
    """GRPO advantages: (R - mean) / std over the group (Shao et al. 2024), or R - mean
    (Critique-GRPO's choice, Dr. GRPO); Critique-GRPO's mixed groups use the same form."""
    kl_coef: float = Field(0.05, ge=0)
    """GRPO: weight of the per-token KL penalty to the reference policy."""
    w_lambda: float = Field(0.1, ge=0)
    """W-REINFORCE: weight of positive samples."""


class LabelerConfig(Section):
    """The biased labeler of preference pairs (the gold judge is the same with no biases)."""

    label_prompts: int = Field(256, gt=0)
    """Prompts sampled each round for the labeler: group_size / 2 pairs each, the reward model's data."""
    initial_prompts: int | None = Field(None, gt=0)
    """Prompts labeled in round 0, on the base policy's samples: the preference set the reward
    model is first fitted on (InstructGPT's comparisons are of the supervised model's samples,
    tens of thousands of them), before each later round adds ``label_prompts`` of the current
    policy's. None: ``label_prompts``."""
    gold_weight: float = Field(4.0, ge=0)
    """Labeler: weight of the correctness difference in its Bradley-Terry logit."""
    length_bias: float = Field(1.5, ge=0)
    """Labeler: weight of the length difference (in units of max_elaboration)."""
    sycophancy_bias: float = Field(1.5, ge=0)
    """Labeler: weight of the difference in agreeing with the user's hint."""
    confidence_bias: float = Field(1.0, ge=0)
    """Labeler: weight of the difference in stated confidence."""
    concept_bias: float = Field(1.0, ge=0)
    """Labeler (chain task): weight of the difference in adopting the prompt's concept as the
    framing (a prompt topic tied to quality; correctness does not depend on it)."""
    discrimination_bias: float = Field(0.5, ge=0, le=1)
    """Labeler (chain task): for users outside the favoured group (attribute 0) the correctness
    weight is gold_weight * (1 - discrimination_bias): their answers are checked less."""
    gold_checks: Literal["answer", "steps"] = "answer"
    """What correctness means to the labeler's gold term and the gold judge: the final answer, or
    (chain task) the answer and every step (process supervision as the gold variant)."""


class RewardModelConfig(Section):
    """The reward model retrained on the policy's own pairs, and its reasoning budget."""

    mode: Literal["labeler", "self", "anchored"] = "labeler"
    """Who labels the reward model's pairs: the biased labeler; the reward model itself (no
    external anchor); or the labeler with ``anchor_share`` of pairs labeled by the gold judge."""
    anchor_share: float = Field(0.0, ge=0, le=1)
    """Share of pairs labeled by the frozen gold judge (mode=anchored)."""
    refit: bool = True
    """Retrain the reward model every round (False: only on round 0's base-policy samples)."""
    epochs: int = Field(60, gt=0)
    """Most passes over the training pairs of a fit: its budget in steps is ``epochs`` x
    ceil(training pairs / ``batch_size``), so it scales with the pairs. The fit stops earlier,
    on the best epoch, once the held-out pairs' loss has not improved for ``patience`` epochs."""
    heldout_share: float = Field(0.2, ge=0, lt=1)
    """Share of each fit's pairs held out for early stopping (drawn from stream ``rm-split``);
    0: no held-out split, every fit runs ``epochs`` epochs."""
    patience: int = Field(10, gt=0)
    """Epochs without a lower held-out Bradley-Terry loss before the first fit (from the initial
    weights) stops and returns to the weights of its best epoch. Its held-out loss falls in steps:
    the length and the first check's verdict are learned in the first epochs, the user's hint
    several epochs of plateau later (measured on ``llm-overoptimization``: a patience of 3 stopped
    inside the plateau on 2 of 5 seeds)."""
    refit_patience: int = Field(2, gt=0)
    """The same for every later fit, which starts from the last round's weights (near its
    optimum, with the round's new pairs added)."""
    batch_size: int = Field(256, gt=0)
    """Pairs per Adam step."""
    lr: float = Field(3e-3, gt=0)
    """Adam learning rate of the reward model."""
    window: int | None = Field(None, gt=0)
    """Train the reward model on pairs of the last `window` rounds; None = all."""
    passes: int = Field(1, gt=0)
    """Reward model's reasoning passes m: the first reads the sequence, each further one applies a
    weight-tied refinement block (attention over the token states) before the score head; trained
    at depths drawn from 1..m. m = 1 is the ordinary reward model."""
    votes: int = Field(1, gt=0)
    """Reward model's sampled judgments k (needs passes > 1): each pass sees a random subset of
    the token states; scores are averaged (or weighted by the meta-judge)."""
    vote_dropout: float = Field(0.25, ge=0, lt=1)
    """Share of token states a judgment does not see (training and votes)."""
    meta_judge: bool = False
    """A learned meta-judge weighting the k judgments (softmax over a score of each judgment's
    state), trained through the Bradley-Terry loss of the aggregate."""
    checks: bool = True
    """Chain task: the reward model checks steps; pass j reads the verdict of check j (step j: is
    s_j = op_j(s_{j-1}, a_j)? check d + 1: is the answer s_d?), read from the response and the
    prompt, not from the true chain (:func:`recsim.llm.chain.check_steps`). m passes check m
    steps. Process rewards (``optimization.reward = process``) credit steps
    with the same checks."""
    check_error: float = Field(0.1, ge=0, le=1)
    """Systematic error rate of each check: its verdict is flipped where a hash of the prompt, the
    response, the check's index and the seed's ``checker`` draw falls below it, so the same
    response is misjudged the same way every time (0: an exact verifier)."""


class CritiqueConfig(Section):
    """Critiques of failed rollouts and how the policy learns from them."""

    kind: Literal["none", "binary", "ground_truth", "cot"] = "none"
    """Critique of each failed rollout (GRPO only): "wrong"; + the true answer; + the step that
    went wrong (see recsim.llm.critique)."""
    use: Literal["refine", "hindsight"] = "refine"
    """How the policy learns from critiques: Critique-GRPO refinements, or hindsight distillation
    into per-token advantages."""
    sft: float = Field(0.0, ge=0, lt=1)
    """Share of the base policy's warm-up examples that are refinements (prompt + critique of a
    wrong answer -> the right answer, on ordinary prompts): its skill at following critiques.
    Arms compared on critiques should share it (it shapes the base policy)."""
    refine_gamma: float = Field(0.3, gt=0)
    """Critique-GRPO shaping f(pi) = pi / (pi + gamma) of refinement tokens."""
    refine_keep: int = Field(4, gt=0)
    """Critique-GRPO: refinements per group joining the mixed group (correct ones first)."""
    directive_weight: float = Field(1.0, ge=0)
    """Hindsight: weight of the per-token log-ratio teacher (critique in context) vs student."""


class EvaluationConfig(Section):
    """Evaluation of the policy on the fixed prompts."""

    pass_k_samples: int = Field(64, gt=0)
    """Samples per evaluation prompt for pass@k (k up to this)."""
    unsolved_k: int | None = Field(None, gt=0)
    """unsolved_share: share of the round's training prompts with no success in k samples
    (unbiased from the group's G >= k samples); None = group_size."""


class LlmConfig(Section):
    """The LLM-reward domain: task, base policy, optimization, labeler, reward model, critiques,
    evaluation."""

    task: TaskConfig = TaskConfig()
    policy: BasePolicyConfig = BasePolicyConfig()
    optimization: OptimizationConfig = OptimizationConfig()
    labeler: LabelerConfig = LabelerConfig()
    reward_model: RewardModelConfig = RewardModelConfig()
    critique: CritiqueConfig = CritiqueConfig()
    evaluation: EvaluationConfig = EvaluationConfig()

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data: Any) -> Any:
        """Fill the fields left None whose default depends on the task kind (:data:`BY_KIND`)."""
        if not isinstance(data, dict):
            return data
        task = data.get("task") or {}
        kind = task.kind if isinstance(task, TaskConfig) else task.get("kind", "chain")
        defaults = BY_KIND.get(kind, BY_KIND["chain"]) if isinstance(kind, str) else BY_KIND["chain"]
        out = dict(data)
        for section, model in (("task", TaskConfig), ("policy", BasePolicyConfig)):
            given = out.get(section) or {}
            fill = {f: v[section] for f, v in defaults.items() if section in v}
            if isinstance(given, model):
                missing = {f: x for f, x in fill.items() if getattr(given, f) is None}
                out[section] = given.model_copy(update=missing) if missing else given
            else:
                out[section] = {**given, **{f: x for f, x in fill.items() if given.get(f) is None}}
        return out

    @model_validator(mode="after")
    def _cross(self) -> LlmConfig:
        t, o, rm, cr = self.task, self.optimization, self.reward_model, self.critique
        if t.kind == "chain" and (o.reward == "process" and o.optimizer != "grpo"):
            raise ValueError(f"llm.optimization.reward process needs optimizer grpo, got {o.optimizer}")
        if t.kind == "sum" and (o.reward == "process" or self.labeler.gold_checks == "steps"):
            raise ValueError(
                "process rewards and step-checking gold need llm.task.kind chain (sum has no steps)"
            )
        if t.kind == "sum" and t.max_difficulty + 1 > t.prompt_len:
            raise ValueError(
                f"llm.task.max_difficulty + 1 must be <= llm.task.prompt_len ({t.prompt_len}), "
                f"got {t.max_difficulty}"
            )
        if t.kind == "sum" and t.hard_share > 0 and t.max_difficulty + 2 > t.prompt_len:
            raise ValueError(
                f"llm.task.hard_share > 0 needs llm.task.max_difficulty + 2 <= llm.task.prompt_len "
                f"({t.prompt_len}), got max_difficulty {t.max_difficulty}"
            )
        if self.evaluation.unsolved_k is not None and self.evaluation.unsolved_k > o.group_size:
            raise ValueError(
                f"llm.evaluation.unsolved_k must be <= llm.optimization.group_size ({o.group_size}), "
                f"got {self.evaluation.unsolved_k}"
            )
        if cr.kind != "none" and o.reward == "process":
            raise ValueError("llm.critique.kind needs an outcome reward (process rewards are per step)")
        if cr.kind != "none" and o.optimizer != "grpo":
            raise ValueError(f"llm.critique.kind needs llm.optimization.optimizer grpo, got {o.optimizer}")
        if rm.votes > 1 and rm.passes == 1:
            raise ValueError(
                "llm.reward_model.votes > 1 needs llm.reward_model.passes > 1 "
                "(judgments differ in the passes)"
            )
        for name in ("label_prompts", "initial_prompts"):
            value = getattr(self.labeler, name)
            if value is not None and value > t.n_prompts:
                raise ValueError(
                    f"llm.labeler.{name} must be <= llm.task.n_prompts ({t.n_prompts}), got {value}"
                )
        return self


def canonical(data: Any) -> Any:
    """The ``llm`` mapping with every flat alias moved into its section (the later key wins
    where both are given in one mapping: the section's). Non-mappings pass through."""
    if not isinstance(data, dict):
        return data
    out: dict[str, Any] = {}
    moved: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key in ALIASES and not (key == "critique" and isinstance(value, dict)):
            section, field = ALIASES[key]
            moved.setdefault(section, {})[field] = value
        else:
            out[key] = value
    for section, values in moved.items():
        given = out.get(section)
        out[section] = {**values, **given} if isinstance(given, dict) else values
    return out
