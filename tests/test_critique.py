"""Directive feedback: hard prompts, critiques, Critique-GRPO's shaping and mixed groups, hindsight
advantages; reward models with a test-time budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recsim.config import ConfigError, validate
from recsim.io.logs import LogStore
from recsim.llm.critique import (
    critique,
    critique_failed,
    critique_grpo_loss,
    diagnose_step,
    directive_advantages,
    mixed_group_advantages,
    refine_shaping,
    select_refinements,
)
from recsim.llm.domain import LlmDomain
from recsim.llm.tasks import N_DIGITS, Format, Prompts, make_prompts, shortcut_answer
from towers.reward_model import RewardModel

FMT = Format(4, 5, 5, 6, 2, hard=True, critiques=True)


def _prompts(n: int, seed: int, hard_share: float = 0.3) -> Prompts:
    return make_prompts(FMT, n, 0.4, torch.Generator().manual_seed(seed), hard_share)


def _decode(fmt: Format, slots: torch.Tensor) -> dict[str, torch.Tensor]:
    """Slot tokens -> (verdict, given, truth, step) with -1 for PAD."""
    hide = lambda col, off: torch.where(slots[:, col] == fmt.critique_pad, -1, slots[:, col] - off)  # noqa: E731
    return {
        "verdict": slots[:, 0] - fmt.critique_base,
        "given": slots[:, 1] - fmt.given_base,
        "truth": hide(2, fmt.truth_base),
        "step": hide(3, fmt.step_base),
    }


def test_hard_prompts_follow_their_rule_and_the_shortcut_is_always_wrong_there():
    p = _prompts(4000, 0)
    hard = p.is_hard(FMT)
    assert 0.27 < float(hard.float().mean()) < 0.33  # 4000 draws of 0.3: sd 0.007
    digits = p.tokens[:, : FMT.prompt_len]
    m = (p.difficulty + 1).unsqueeze(1)
    assert torch.equal(p.answer, (digits * (torch.arange(4) < m)).sum(1) % 5)
    assert torch.all(p.tokens[hard, FMT.prompt_len] == FMT.hard_token)
    assert torch.all(p.tokens[~hard, FMT.prompt_len] < FMT.hint_base)  # ordinary difficulty tokens
    short = shortcut_answer(FMT, p)
    assert torch.all(short[hard] != p.answer[hard])  # never right on hard prompts
    assert torch.equal(short[~hard], p.answer[~hard])
    # the shortcut is the sum without the last needed digit
    assert torch.equal(short[hard], digits[hard, :3].sum(1) % 5)
    # token ids of every part are disjoint and inside the prompt vocabulary
    assert FMT.hint_base == N_DIGITS + 3 and FMT.hard_token == FMT.hint_base + 5
    assert int(p.tokens.max()) < FMT.critique_base < FMT.prompt_vocab
    # critique tokens: WRONG, A given answers, A true answers, L + 1 steps, PAD - the last id
    assert FMT.critique_vocab == 1 + 5 + 5 + 5 + 1 and FMT.critique_pad == FMT.prompt_vocab - 1


def test_prompt_sets_without_hard_prompts_are_unchanged():
    plain = Format(4, 5, 5, 6, 2)
    a = make_prompts(plain, 500, 0.4, torch.Generator().manual_seed(3))
    b = make_prompts(
        Format(4, 5, 5, 6, 2, hard=True, critiques=True), 500, 0.4, torch.Generator().manual_seed(3)
    )
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.answer, b.answer)
    with pytest.raises(ValueError, match="hard prompts need"):
        make_prompts(plain, 10, 0.4, torch.Generator().manual_seed(3), 0.5)


@pytest.mark.parametrize("strength", ["binary", "ground_truth", "cot"])
def test_critiques_hold_what_they_claim_and_nothing_of_another_prompt(strength):
    p = _prompts(600, 1)
    g = torch.Generator().manual_seed(2)
    prompt = torch.arange(600).repeat_interleave(4)
    tokens = torch.zeros(2400, FMT.max_len, dtype=torch.long)
    tokens[:, 0] = torch.randint(5, (2400,), generator=g)
    crit = critique_failed(FMT, p, prompt, tokens, strength)
    wrong = tokens[:, 0] != p.answer[prompt]
    assert torch.equal(crit.row, torch.nonzero(wrong).squeeze(1))  # every failed response, no other
    d = _decode(FMT, crit.slots(FMT))
    own = prompt[crit.row]
    assert torch.all(d["verdict"] == 0) and torch.equal(d["given"], tokens[crit.row, 0])
    if strength == "binary":
        assert torch.all(d["truth"] == -1) and torch.all(d["step"] == -1)
    else:  # the true answer of the response's own prompt
        assert torch.equal(d["truth"], p.answer[own])
    if strength == "cot":
        assert torch.equal(d["step"], diagnose_step(FMT, p.take(own), d["given"]))
        assert torch.all(d["step"] >= 0)
    else:
        assert torch.all(d["step"] == -1)
    ctx = crit.context(FMT, p.tokens[own])
    assert torch.equal(ctx[:, : p.tokens.shape[1]], p.tokens[own])
    # Replace every other prompt: the critiques of prompt 0's responses do not change.
    other = _prompts(600, 99)
    mixed = Prompts(
        torch.cat([p.tokens[:1], other.tokens[1:]]),
        torch.cat([p.answer[:1], other.answer[1:]]),
        torch.cat([p.difficulty[:1], other.difficulty[1:]]),
        torch.cat([p.hint[:1], other.hint[1:]]),
    )
    again = critique_failed(FMT, mixed, prompt, tokens, strength)
    mine, mine_again = crit.row < 4, again.row < 4
    assert torch.equal(crit.row[mine], again.row[mine_again])
    assert torch.equal(crit.slots(FMT)[mine], again.slots(FMT)[mine_again])


def test_the_diagnosed_step_is_the_prefix_that_gives_the_answer_nearest_the_digits_needed():
    # digits 3 4 1 2: prefix sums mod 5 are 3, 2, 3, 0
    tokens = torch.tensor([[3, 4, 1, 2, N_DIGITS + 2, FMT.hint_base]] * 5)
    p = Prompts(tokens, torch.full((5,), 3), torch.tensor([2, 2, 2, 1, 2]), torch.zeros(5, dtype=torch.long))
    given = torch.tensor([2, 0, 1, 3, 3])
    # stopped after 2 digits; one digit too many; no prefix (a slip); tie at distance 1 -> shorter;
    # an exact match at m = 3
    assert diagnose_step(FMT, p, given).tolist() == [2, 4, 0, 1, 3]


def test_critique_strength_is_checked():
    p = _prompts(4, 0)
    with pytest.raises(ValueError, match="critique strength"):
        critique(FMT, p, torch.arange(4), p.answer, "loud")
    with pytest.raises(ValueError, match="Format.critiques"):
        critique(Format(4, 5, 5, 6, 2), p, torch.arange(4), p.answer, "binary").context(
            Format(4, 5, 5, 6, 2), p.tokens
        )


def test_shaping_matches_its_formula_and_gradient():
    p = torch.tensor([1e-4, 0.01, 0.1, 0.3, 0.5, 0.9, 1.0], dtype=torch.float64)
    for gamma in (0.1, 0.3, 0.5):
        logp = p.log().requires_grad_(True)
        f = refine_shaping(logp, gamma)
        assert torch.allclose(f, p / (p + gamma), rtol=1e-12)
        f.sum().backward()
        # df / dlog pi = gamma pi / (pi + gamma)^2: largest at pi = gamma, small for pi << gamma
        assert torch.allclose(logp.grad, gamma * p / (p + gamma) ** 2, rtol=1e-10)
    grid = torch.linspace(1e-3, 1, 1000, dtype=torch.float64).log().requires_grad_(True)
    refine_shaping(grid, 0.3).sum().backward()
    assert abs(float(grid.exp()[grid.grad.argmax()]) - 0.3) < 2e-3
    with pytest.raises(ValueError):
        refine_shaping(p.log(), 0.0)


def test_mixed_groups_average_over_initial_responses_and_their_refinements():
    rewards = torch.tensor([0.0, 0.0, 1.0, 0.0])  # two groups of G = 2
    ref_rewards, ref_group = torch.tensor([1.0, 1.0, 0.0]), torch.tensor([0, 1, 0])
    adv, ref_adv = mixed_group_advantages(rewards, 2, ref_rewards, ref_group)
    # group 0: [0, 0, 1, 0] mean 1/4; group 1: [1, 0, 1] mean 2/3
    assert torch.allclose(adv, torch.tensor([-0.25, -0.25, 1 / 3, -2 / 3]))
    assert torch.allclose(ref_adv, torch.tensor([0.75, 1 / 3, -0.25]))
    adv_s, ref_s = mixed_group_advantages(rewards, 2, ref_rewards, ref_group, std=True)
    sd0, sd1 = torch.tensor([0.0, 0, 1, 0]).std(), torch.tensor([1.0, 0, 1]).std()
    assert torch.allclose(adv_s, adv / torch.stack([sd0, sd0, sd1, sd1]), atol=1e-5)
    assert torch.allclose(ref_s, ref_adv / torch.stack([sd0, sd1, sd0]), atol=1e-5)
    # an all-failed group with no correct refinement teaches nothing, as in scalar GRPO
    adv0, _ = mixed_group_advantages(torch.zeros(4), 4, torch.zeros(2), torch.zeros(2, dtype=torch.long))
    assert torch.all(adv0 == 0)


def test_refinements_are_kept_correct_first_up_to_keep_per_group():
    group = torch.tensor([0, 0, 0, 1, 1, 2])
    correct = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    assert select_refinements(group, correct, 1).tolist() == [False, True, False, False, True, True]
    assert select_refinements(group, correct, 2).tolist() == [False, True, True, True, True, True]
    assert select_refinements(group[:0], correct[:0], 2).numel() == 0


def test_critique_grpo_loss_weights_refinement_tokens_by_the_shaping():
    logp = torch.log(torch.tensor([[0.5, 0.2], [0.4, 0.9]]))
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    ref_logp = torch.log(torch.tensor([[0.05, 0.6]])).requires_grad_(True)
    ref_mask = torch.ones(1, 2)
    adv, ref_adv = torch.tensor([-0.5, 0.25]), torch.tensor([2.0])
    loss = critique_grpo_loss(logp, mask, adv, ref_logp, ref_mask, ref_adv, 0.3)
    p = torch.tensor([0.05, 0.6])
    expected = -((-0.5) * (logp[0].sum()) + 0.25 * logp[1, 0] + 2.0 * (p / (p + 0.3)).sum()) / 5
    assert torch.allclose(loss, expected)
    loss.backward()
    assert torch.allclose(ref_logp.grad[0], -2.0 * 0.3 * p / (p + 0.3) ** 2 / 5)


def test_directive_advantages_add_the_teacher_log_ratio_on_critiqued_rows_only():
    adv = torch.tensor([1.0, -1.0, 0.0])
    mask = torch.tensor([[1.0, 1.0, 0.0]] * 3)
    rows = torch.tensor([2])
    teacher, student = torch.tensor([[-3.0, -0.5, -9.0]]), torch.tensor([[-1.0, -0.5, -1.0]])
    out = directive_advantages(adv, rows, teacher, student.requires_grad_(True), mask, 0.5)
    assert torch.equal(out[:2], torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]))
    assert torch.allclose(out[2], torch.tensor([-1.0, 0.0, 0.0]))  # only the disowned token
    assert not out.requires_grad


def test_config_rules_for_critiques_and_budgets():
    for bad, match in [
        ({"critique": "binary", "optimizer": "best_of_n"}, "needs llm.optimization.optimizer grpo"),
        ({"rm_votes": 3}, "reward_model.votes > 1 needs"),
        ({"task": {"kind": "sum"}, "hard_share": 0.2, "max_difficulty": 3}, "hard_share > 0 needs"),
        ({"reward": "process", "optimizer": "psr"}, "reward process needs optimizer grpo"),
        ({"reward": "process", "critique": "cot"}, "critique.kind needs an outcome reward"),
        ({"task": {"kind": "sum"}, "labeler": {"gold_checks": "steps"}}, "need llm.task.kind chain"),
        ({"unsolved_k": 16}, "evaluation.unsolved_k must be"),
    ]:
        with pytest.raises(ConfigError, match=match):
            validate({"domain": "llm", "llm": bad})


# -- reward models with a test-time budget ------------------------------------------------------


def _rm(passes: int, votes: int = 1, meta: bool = False) -> RewardModel:
    return RewardModel(
        FMT.prompt_vocab, FMT.vocab, 32, torch.Generator().manual_seed(5), passes, votes, 0.25, meta
    )


def test_budget_one_is_the_ordinary_reward_model_and_extra_passes_start_as_identity():
    p = _prompts(64, 4)
    responses = torch.randint(FMT.n_answers, (64, FMT.max_len), generator=torch.Generator().manual_seed(1))
    base, deep = _rm(1).eval(), _rm(8, 4, meta=True).eval()
    with torch.inference_mode():
        s1 = base(p.tokens, responses)
        assert torch.equal(deep(p.tokens, responses, passes=1), s1)  # same parameters, drawn first
        assert torch.allclose(deep(p.tokens, responses, passes=8, votes=1), s1, atol=1e-6)  # zero-init block
        a, b = deep(p.tokens, responses), deep(p.tokens, responses)
    assert torch.equal(a, b)  # judgments drawn from the model's own seed: reproducible
    with pytest.raises(ValueError, match="outside"):
        deep(p.tokens, responses, passes=9)
    with pytest.raises(ValueError):
        _rm(1, 4)


def _fitted_accuracy(seed: int, root: Path) -> dict[int, float]:
    """Fit a 4-pass reward model on round 0's labeled pairs; held-out gold accuracy per depth."""
    llm = {
        "task": {"kind": "sum"},
        "sft_steps": 60,
        "rm_passes": 4,
        # the fit this test's bounds were set with: 6 epochs over every pair (no early stopping),
        # so that what varies is the depth, not the fit
        "reward_model": {"epochs": 6, "heldout_share": 0.0},
        "label_prompts": 1024,
        "policy_steps": 0,
    }
    d = LlmDomain(validate({"domain": "llm", "seed": seed, "llm": llm}))
    state = d.initial_state()
    batch = d.act(state, 0)
    logs = LogStore(root / str(seed))
    logs.append(0, "a", d.log_frame(state, batch, d.feedback(state, batch, 0)))
    state = d.fit(state, logs, "a", 0)
    return {m: d.rm_accuracy(state.reward_model, d.ref_many, d.heldout, m, 1) for m in (1, 2, 4)}


def test_reward_model_accuracy_does_not_fall_as_the_budget_grows(tmp_path):
    accs = [_fitted_accuracy(seed, tmp_path) for seed in (0, 1, 2)]
    # The model learned correctness (chance is 0.5) on every seed.
    assert all(acc[1] > 0.7 for acc in accs), accs
    # Deeper passes keep what the first found: the depths are scored on the same ~2,900 held-out
    # pairs, so their difference is paired; its mean over the seeds may not fall by more than
    # 0.02 (four binomial sd of an unpaired difference on one seed). One seed alone is not held
    # to it: seed 0's depth-4 drop is 0.031 on one x86-64 machine and was under 0.02 on another
    # with the same code (float reduction order).
    for m in (2, 4):
        mean_change = sum(acc[m] - acc[1] for acc in accs) / len(accs)
        assert mean_change >= -0.02, (m, accs)


# -- the plateau and what critiques do to it ----------------------------------------------------

PLATEAU = {
    "task": {"kind": "sum"},
    "optimizer": "grpo",
    "reward": "binary",
    "advantage": "mean",
    "hard_share": 0.5,
    "critique_sft": 0.25,
    "sft_steps": 1500,
    "label_prompts": 1024,
    "n_eval_prompts": 128,
    "pass_k_samples": 16,
    "rm_refit": False,
}


def test_the_base_policy_never_solves_hard_prompts_and_only_critiques_reach_them(tmp_path):
    """Scalar GRPO gets no gradient from groups where every sample failed; Critique-GRPO's
    refinements (with the true answer) give those groups one. The base policy never solves a hard
    prompt, scalar GRPO stays on the plateau, and the critique arm's refinements of failed
    rollouts sometimes succeed, so its failed groups carry a learning signal. Whether that lowers the
    unsolved share over a run is the validation suite's claim ``critique-grpo-unsolved`` (seeds
    and intervals); at this size it is a few points, within three seeds' noise."""
    base = LlmDomain(validate({"domain": "llm", "seed": 0, "llm": PLATEAU}))
    hard = base.eval.is_hard(base.fmt)
    many = base.sample(
        base.reference, base.eval.take(torch.nonzero(hard).squeeze(1)), 64, torch.Generator().manual_seed(0)
    )
    assert float(many.correct.mean()) < 0.005  # essentially never: pass@64 on ~64 hard prompts
    import polars as pl

    from recsim.core.loop import run_arm

    def rows(**llm) -> pl.DataFrame:
        d = LlmDomain(validate({"domain": "llm", "seed": 0, "llm": {**PLATEAU, **llm}}))
        return pl.DataFrame(run_arm(d, "arm", 3, LogStore(tmp_path / str(len(llm))), lambda *_: None))

    scalar, critiqued = rows(), rows(critique="ground_truth")
    assert scalar["unsolved_share_hard"].min() > 0.85  # the plateau: hard groups all fail
    assert critiqued["critiqued"].min() > 0.2  # failed rollouts are critiqued ...
    # ... and some refinements succeed (0.24-0.32 here, about the 0.2 of guessing among A = 5
    # answers: following a critique is a weak skill at this warm-up), so a failed group's mixed
    # group has a correct member and a gradient, where scalar GRPO's has none
    assert critiqued["refine_success"].min() > 0.1


def test_the_benchmark_reports_judgments_per_second_at_each_budget():
    from recsim.cli.bench import bench_rm_judgments

    out = bench_rm_judgments(256, ((1, 1), (4, 2)))
    assert set(out) == {(1, 1), (4, 2)} and all(v > 0 for v in out.values())
