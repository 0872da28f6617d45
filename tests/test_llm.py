"""LLM-reward domain: sampling, estimators, labeler biases, reward-model learning, calibration."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from conftest import SHORT_RM_FIT

from recsim.config import validate
from recsim.llm.domain import Batch, LlmDomain
from recsim.llm.feedback import Rollouts
from recsim.llm.rl import group_advantages, pass_at_k, sign_split_advantages
from recsim.llm.tasks import make_prompts, step_masks
from recsim.scenario import load_scenario
from towers.llm_policy import response_mask

SMALL = [
    "llm.label_prompts=64",
    "llm.initial_prompts=64",
    "llm.n_eval_prompts=128",
    "llm.pass_k_samples=16",
    "tracking.enabled=false",
    *SHORT_RM_FIT,
]


def _domain(**llm) -> LlmDomain:
    """A domain of the sum task (its one-token format is what these tests craft by hand)."""
    return LlmDomain(validate({"domain": "llm", "llm": {"task": {"kind": "sum"}, "sft_steps": 40, **llm}}))


def test_prompts_answers_and_hints_follow_the_rule():
    d = _domain(sft_steps=0)
    p = d.pool
    digits = p.tokens[:, : d.fmt.prompt_len]
    for i in range(50):
        m = int(p.difficulty[i]) + 1
        assert int(p.answer[i]) == int(digits[i, :m].sum()) % d.fmt.n_answers
    assert abs(float(p.hint_wrong.float().mean()) - d.cfg.task.hint_wrong) < 0.05  # 4096 prompts


def test_samples_follow_the_format_and_the_policy_probabilities():
    d = _domain()
    prompt = d.pool.tokens[:1].expand(40_000, -1)
    tokens = d.reference.sample(prompt, torch.Generator().manual_seed(0))
    masks = step_masks(d.fmt)  # [T, V]
    allowed = masks[torch.arange(tokens.shape[1]).expand_as(tokens), tokens]  # [N, T]
    assert torch.all(allowed | (response_mask(tokens, d.fmt.eos) == 0))  # EOS padding after the end
    assert torch.all((tokens == d.fmt.eos).any(1))
    # Empirical frequency of each first token vs the policy's probability (binomial, 5 sigma).
    with torch.no_grad():
        logp = d.reference.log_probs(
            prompt[:1].expand(d.fmt.n_answers, -1),
            torch.cat([torch.arange(d.fmt.n_answers).unsqueeze(1), tokens[: d.fmt.n_answers, 1:]], 1),
        )[:, 0]
    p = logp.exp().double()
    freq = torch.bincount(tokens[:, 0], minlength=d.fmt.n_answers).double() / len(tokens)
    assert torch.all((freq - p).abs() < 5 * (p * (1 - p) / len(tokens)).sqrt() + 1e-4), (freq, p)
    # Whole responses: the most frequent sequence's frequency matches exp(sum log pi).
    uniq, counts = torch.unique(tokens, dim=0, return_counts=True)
    top = uniq[counts.argmax()].unsqueeze(0)
    with torch.no_grad():
        p_seq = float(d.reference.log_probs(prompt[:1], top).sum().exp())
    f_seq = float(counts.max()) / len(tokens)
    assert abs(f_seq - p_seq) < 5 * math.sqrt(p_seq * (1 - p_seq) / len(tokens))


@pytest.mark.parametrize("n", [1, 5, 8, 12])
def test_pass_at_k_matches_brute_force(n):
    for c in range(n + 1):
        outcomes = [1] * c + [0] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(range(n), k))
            brute = sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)
            got = float(pass_at_k(n, torch.tensor([c]), k))
            assert got == pytest.approx(brute, abs=1e-12)
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(n, torch.tensor([0]), n + 1)


@pytest.mark.parametrize("n", [2, 4, 16, 64])
def test_best_of_n_kl_formula_matches_an_empirical_estimate(n):
    # Base: uniform over M outcomes with distinct rewards (reward = index). Best-of-n keeps the max.
    m, draws = 1000, 400_000
    g = torch.Generator().manual_seed(n)
    best = torch.randint(m, (draws, n), generator=g).max(1).values
    q = torch.bincount(best, minlength=m).double() / draws
    nz = q > 0
    empirical = float((q[nz] * (q[nz] * m).log()).sum())
    formula = math.log(n) - (n - 1) / n
    # Plug-in bias ~ (occupied bins) / (2 draws) <= 0.00125; discreteness of M adds O(n / M).
    assert empirical == pytest.approx(formula, abs=0.01 + n / m)


def _crafted(d: LlmDomain, feature: str, n_pairs: int) -> Rollouts:
    """Pairs (2i, 2i+1) identical but for ``feature``, where the first member has more of it."""
    fmt = d.fmt
    prompts = make_prompts(fmt, n_pairs, 0.0, torch.Generator().manual_seed(1))  # hints all correct
    prompt = torch.arange(n_pairs).repeat_interleave(2)
    answer = prompts.answer[prompt]
    conf = torch.full((2 * n_pairs,), fmt.n_answers + 2)
    n_elab = torch.full((2 * n_pairs,), 2)
    if feature == "length":
        n_elab[0::2] = fmt.max_elaboration
    elif feature == "confidence":
        conf[0::2] = fmt.n_answers + fmt.conf_bins - 1
        conf[1::2] = fmt.n_answers
    elif feature in ("agree", "correct"):
        answer = answer.clone()
        answer[1::2] = (answer[1::2] + 1) % fmt.n_answers  # second member wrong (and off-hint)
    tail = torch.where(torch.arange(fmt.max_len - 2) < n_elab.unsqueeze(1), fmt.elab, fmt.eos)
    tokens = torch.cat([answer.unsqueeze(1), conf.unsqueeze(1), tail], 1)
    return Rollouts.build(fmt, prompts, prompt, tokens)


@pytest.mark.parametrize(
    ("feature", "llm", "logit"),
    [
        ("length", {"length_bias": 1.5}, 1.5 * 4 / 6),
        ("confidence", {"confidence_bias": 2.0}, 2.0 * 0.8),
        ("correct", {"gold_weight": 1.0, "sycophancy_bias": 0.5}, 1.0 + 0.5),
    ],
)
def test_labeler_preference_rates_match_its_biases(feature, llm, logit):
    zero = {"gold_weight": 0.0, "length_bias": 0.0, "sycophancy_bias": 0.0, "confidence_bias": 0.0}
    d = _domain(sft_steps=0, **{**zero, **llm})
    r = _crafted(d, feature, 20_000)
    labels = d.feedback(d.initial_state(), Batch(r), 0)
    first_wins = float((labels.winner % 2 == 0).double().mean())
    p = 1 / (1 + math.exp(-logit))
    assert first_wins == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / 20_000))


def test_reward_model_learns_the_labelers_length_bias(tmp_path):
    zero = {"gold_weight": 0.0, "sycophancy_bias": 0.0, "confidence_bias": 0.0, "length_bias": 3.0}
    d = _domain(optimizer="none", rm_epochs=5, **zero)
    from recsim.core.loop import run_arm
    from recsim.io.logs import LogStore

    rows = run_arm(d, "a", 2, LogStore(tmp_path / "logs"), lambda *a: None)
    # Score the base policy's samples; regress the reward on length.
    state = d.initial_state()
    logs = LogStore(tmp_path / "logs")
    gens = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    d._fit_reward_model(state, logs.read("a", 0, 1), *gens)
    r = d.sample(d.reference, d.eval, 8, torch.Generator().manual_seed(3))
    s = d.score(state.reward_model, r).double()
    slope = np.polyfit(r.length.double().numpy(), s.numpy(), 1)[0]
    assert slope > 0.1, slope  # reward per elaboration token; the labeler's is 3 / 6 = 0.5 logits
    assert rows[-1]["spurious_share"] > 0.5


def test_advantages():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    a = group_advantages(r, 4)
    assert a[:4].sum().abs() < 1e-6 and a[0] > 0 and torch.all(a[4:] == 0)
    pos = torch.tensor([True, False])
    assert sign_split_advantages(pos, "psr").tolist() == [1.0, 0.0]
    assert sign_split_advantages(pos, "nsr").tolist() == [0.0, -1.0]
    assert sign_split_advantages(pos, "w_reinforce", 0.1).tolist() == pytest.approx([0.1, -1.0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_brier_term_calibrates_binary_reward_does_not(tmp_path, seed):
    sc = load_scenario("llm-calibration")
    overrides = [*SMALL, "loop.rounds=8", f"seed={seed}", "llm.task.kind=sum"]  # the one-token task
    frame = sc.run(sc.resolve(overrides), Path(tmp_path) / "cal")
    ece = {(a, r): e for a, r, e in frame.select("arm", "round", "ece").iter_rows()}
    assert ece[("binary", 7)] > ece[("binary", 0)] - 0.02  # no improvement under binary reward
    assert ece[("rlcr", 7)] < ece[("rlcr", 0)] - 0.03  # the Brier term drives it down
    assert ece[("rlcr", 7)] < ece[("binary", 7)] - 0.1
    acc = frame.filter(pl.col("round") == 7).select("arm", "accuracy").rows()
    accuracy = dict(acc)
    assert accuracy["rlcr"] > accuracy["binary"] - 0.05  # without a real loss of accuracy


def test_reward_spurious_share_with_a_constant_feature():
    """A feature that never varies (every response states the same confidence) leaves the split
    defined: the score here is all correctness, then all length."""
    from types import SimpleNamespace

    from recsim.llm.domain import reward_shares

    g = torch.Generator().manual_seed(0)
    n = 400
    r = SimpleNamespace(
        correct=(torch.rand(n, generator=g) < 0.5).float(),
        length=torch.randint(0, 6, (n,), generator=g).float(),
        agree=torch.zeros(n),
        confidence=torch.full((n,), 0.7),
    )
    assert reward_shares(2.0 * r.correct, r)["spurious_share"] == pytest.approx(0.0, abs=1e-9)
    assert reward_shares(0.5 * r.length, r)["spurious_share"] == pytest.approx(1.0, abs=1e-9)
