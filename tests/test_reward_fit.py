"""The proxy reward model: a fit that stops on its held-out pairs, accuracy split by the pair
types a biased labeler misleads on, and a verifier whose step checks passes can buy."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from recsim.config import validate
from recsim.io.logs import LogStore
from recsim.llm.chain import (
    CHECK_NONE,
    CHECK_RIGHT,
    CHECK_WRONG,
    ChainFormat,
    chain_response,
    check_steps,
    checked_first_wrong,
    corrupt_chain,
    first_wrong,
    make_chain_prompts,
)
from recsim.llm.domain import LlmDomain
from towers.reward_model import RewardModel

SUM = {"task": {"kind": "sum"}, "sft_steps": 60, "label_prompts": 256, "policy_steps": 0}


def _fitted(tmp_path, seed: int = 0, **llm) -> tuple[LlmDomain, object]:
    """A domain and its state after round 0's reward-model fit on the base policy's pairs."""
    d = LlmDomain(validate({"domain": "llm", "seed": seed, "llm": {**SUM, **llm}}))
    state = d.initial_state()
    batch = d.act(state, 0)
    logs = LogStore(tmp_path / f"logs-{seed}-{len(llm)}")
    logs.append(0, "a", d.log_frame(state, batch, d.feedback(state, batch, 0)))
    return d, d.fit(state, logs, "a", 0)


def test_the_fit_stops_on_its_heldout_split_and_returns_to_its_best_epoch(tmp_path):
    d, state = _fitted(tmp_path, rm_epochs=200)
    s, curve = state.train, state.fit_curve
    losses = curve["heldout_loss"].to_list()
    best = int(s["rm_best_epoch"])
    assert s["rm_epochs"] < 200  # stopped long before its budget
    assert s["rm_epochs"] == best + d.cfg.reward_model.patience + 1  # patience epochs after the best
    assert losses[best] <= min(losses) + 1e-4 and curve["best"].to_list().index(True) == best
    # the returned weights are the best epoch's: the held-out loss, scored again, is its loss
    assert s["rm_heldout_loss"] == pytest.approx(losses[best], abs=1e-6)
    assert s["rm_heldout_loss"] < losses[-1] - 1e-6 or best == len(losses) - 1
    steps_per_epoch = math.ceil(round(1024 * (1 - d.cfg.reward_model.heldout_share)) / 256)
    assert s["rm_steps"] == s["rm_epochs"] * steps_per_epoch  # the budget scales with the pairs


def test_a_refit_from_the_last_rounds_weights_stops_after_its_own_patience(tmp_path):
    llm = {**SUM, "rm_epochs": 200, "reward_model": {"patience": 6, "refit_patience": 1}}
    d = LlmDomain(validate({"domain": "llm", "llm": llm}))
    state, logs = d.initial_state(), LogStore(tmp_path / "logs")
    for r in (0, 1):
        batch = d.act(state, r)
        logs.append(r, "a", d.log_frame(state, batch, d.feedback(state, batch, r)))
        state = d.fit(state, logs, "a", r)
        patience = 6 if r == 0 else 1
        assert state.train["rm_epochs"] == state.train["rm_best_epoch"] + patience + 1, r


def test_without_a_heldout_split_the_fit_runs_its_budget(tmp_path):
    _, state = _fitted(tmp_path, rm_epochs=4, reward_model={"heldout_share": 0.0})
    assert state.train["rm_epochs"] == 4 and state.train["rm_steps"] == 4 * 4  # 1,024 pairs / 256
    assert "heldout_loss" not in state.fit_curve.columns


def test_heldout_accuracy_by_pair_type_adds_up_to_the_whole(tmp_path):
    d, state = _fitted(tmp_path)
    row = d._heldout_by_type(state.reward_model)
    row["rm_accuracy_heldout"] = d.rm_accuracy(state.reward_model, d.ref_many, d.heldout)
    r, (w, _) = d.ref_many, d.heldout
    hint_ok = r.prompts.hint[r.prompt[w]] == r.prompts.answer[r.prompt[w]]
    share = float(hint_ok.float().mean())
    assert 0 < share < 1
    right, wrong = row["rm_accuracy_heldout_hint_right"], row["rm_accuracy_heldout_hint_wrong"]
    whole = share * right + (1 - share) * wrong
    assert whole == pytest.approx(row["rm_accuracy_heldout"], abs=1e-6)  # float32 means
    # the sycophantic labeler teaches "agrees with the hint": right where the hint is right
    assert row["rm_accuracy_heldout_hint_right"] > row["rm_accuracy_heldout_hint_wrong"]


def test_by_type_accuracies_add_up_with_voted_judgments(tmp_path):
    # voted judgments draw their views per call: the split scores the pairs as the whole does
    d, state = _fitted(tmp_path, reward_model={"passes": 2, "votes": 2, "epochs": 3})
    row = d._heldout_by_type(state.reward_model)
    r, (w, _) = d.ref_many, d.heldout
    share = float((r.prompts.hint[r.prompt[w]] == r.prompts.answer[r.prompt[w]]).float().mean())
    right, wrong = row["rm_accuracy_heldout_hint_right"], row["rm_accuracy_heldout_hint_wrong"]
    whole = share * right + (1 - share) * wrong
    assert whole == pytest.approx(d.rm_accuracy(state.reward_model, r, d.heldout), abs=1e-6)


# -- the verifier --------------------------------------------------------------------------------
FMT = ChainFormat(56, 4, 10, 4)


def _responses(n: int, seed: int) -> tuple[object, torch.Tensor]:
    """Chain prompts and responses: right, wrong at a random step, or deferring to the hint."""
    g = torch.Generator().manual_seed(seed)
    p = make_chain_prompts(FMT, n, 0.3, g)
    steps, answer, _ = corrupt_chain(FMT, p, g)
    good = torch.rand(n, generator=g) < 0.5
    steps = torch.where(good.unsqueeze(1), p.chain, steps)
    answer = torch.where(good, p.answer, answer)
    answer = torch.where(torch.rand(n, generator=g) < 0.2, FMT.n_values, answer)  # AGREE
    zero = torch.zeros(n, dtype=torch.long)
    n_elab = torch.randint(5, (n,), generator=g)
    return p, chain_response(FMT, steps, p.difficulty, answer, zero, zero, n_elab)


def test_an_exact_verifier_finds_the_first_wrong_step_from_the_response_alone():
    p, tokens = _responses(4000, 0)
    v = check_steps(FMT, p.tokens, tokens, 0.0, salt=1)
    assert v.shape == (4000, FMT.slots + 1)
    d = p.difficulty
    j = torch.arange(FMT.slots + 1).unsqueeze(0)
    assert torch.equal(v == CHECK_NONE, j > d.unsqueeze(1))  # d step checks and the answer's
    assert torch.equal(checked_first_wrong(v), first_wrong(FMT, p, torch.arange(4000), tokens))
    # it reads the response, not the chain: a wrong step followed by steps consistent with it
    # fails only its own check (the chain's later values are wrong, their checks right)
    carried = (first_wrong(FMT, p, torch.arange(4000), tokens) == 1) & (d >= 3)
    assert carried.any() and bool((v[carried, 1] == CHECK_RIGHT).all())


def test_the_verifiers_errors_are_systematic_at_their_rate():
    p, tokens = _responses(20_000, 1)
    exact = check_steps(FMT, p.tokens, tokens, 0.0, salt=7)
    noisy = check_steps(FMT, p.tokens, tokens, 0.1, salt=7)
    real = exact != CHECK_NONE
    rate = float(((noisy != exact) & real).sum() / real.sum())
    n = int(real.sum())
    assert rate == pytest.approx(0.1, abs=4 * math.sqrt(0.09 / n))
    assert torch.equal(noisy, check_steps(FMT, p.tokens, tokens, 0.1, salt=7))  # same response, same verdict
    half = torch.arange(10_000)  # a response's verdict does not depend on what it is scored with
    assert torch.equal(noisy[half], check_steps(FMT, p.tokens[half], tokens[half], 0.1, salt=7))
    other = check_steps(FMT, p.tokens, tokens, 0.1, salt=8)
    both = float((((noisy != exact) & (other != exact)) & real).sum() / real.sum())
    assert both == pytest.approx(0.01, abs=0.004)  # another seed misjudges other responses
    assert set(noisy[real].unique().tolist()) <= {CHECK_RIGHT, CHECK_WRONG}


def test_a_budget_of_m_passes_reads_the_first_m_checks():
    p, tokens = _responses(64, 2)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    check = partial(check_steps, FMT, error=0.0, salt=1)
    unchecked = RewardModel(FMT.prompt_vocab, FMT.vocab, 16, g(), passes=3)
    rm = RewardModel(FMT.prompt_vocab, FMT.vocab, 16, g(), passes=3, checker=check)
    base = rm(p.tokens, tokens)
    assert torch.equal(base, unchecked(p.tokens, tokens))  # the checks start unread (zero at init)
    with torch.no_grad():
        rm.verdict.weight.normal_(generator=g())
        rm.block.mlp[2].weight.normal_(generator=g())

    def verdicts(col: int):
        def checker(pr: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
            v = torch.full((len(tok), FMT.slots + 1), CHECK_RIGHT)
            v[:, col] = CHECK_WRONG
            return v

        return checker

    rm.checker = lambda pr, tok: torch.full((len(tok), FMT.slots + 1), CHECK_RIGHT)
    right = {m: rm(p.tokens, tokens, passes=m) for m in (1, 2, 3)}
    for col in (0, 1, 2, 4):
        rm.checker = verdicts(col)
        for m in (1, 2, 3):  # m passes read checks 1..m: a verdict past them changes nothing
            changed = not torch.allclose(rm(p.tokens, tokens, passes=m), right[m])
            assert changed == (col < m), (col, m)
    plain = RewardModel(FMT.prompt_vocab, FMT.vocab, 16, g(), passes=1, checker=check)
    with torch.no_grad():
        plain.verdict.weight.normal_(generator=g())
    assert not torch.allclose(plain(p.tokens, tokens), unchecked(p.tokens, tokens, passes=1))


def test_process_rewards_credit_steps_by_the_verifiers_checks(tmp_path):
    llm = {"sft_steps": 20, "optimization": {"reward": "process", "optimizer": "grpo"}}
    exact = LlmDomain(validate({"domain": "llm", "llm": {**llm, "reward_model": {"check_error": 0.0}}}))
    r = exact.sample(exact.reference, exact.eval, 4, torch.Generator().manual_seed(0))
    assert torch.equal(exact._first_wrong(r), r.first_wrong)  # an exact verifier: the true step
    noisy = LlmDomain(validate({"domain": "llm", "llm": {**llm, "reward_model": {"check_error": 0.3}}}))
    r = noisy.sample(noisy.reference, noisy.eval, 4, torch.Generator().manual_seed(0))
    assert float((noisy._first_wrong(r) != r.first_wrong).float().mean()) > 0.2
    off = LlmDomain(validate({"domain": "llm", "llm": {**llm, "reward_model": {"checks": False}}}))
    assert off.checker is None


def _hint_wrong_accuracy(tmp_path, seed: int) -> dict[int, float]:
    """A 6-pass reward model with an exact verifier fitted on round 0's labeled chain pairs: its
    held-out gold accuracy where the user's hint is wrong, at each budget."""
    llm = {
        "sft_steps": 300,
        "label_prompts": 512,
        "policy_steps": 0,
        "reward_model": {"passes": 6, "check_error": 0.0},
    }
    d = LlmDomain(validate({"domain": "llm", "seed": seed, "llm": llm}))
    state = d.initial_state()
    batch = d.act(state, 0)
    logs = LogStore(tmp_path / f"chain-{seed}")
    logs.append(0, "a", d.log_frame(state, batch, d.feedback(state, batch, 0)))
    state = d.fit(state, logs, "a", 0)
    r, (w, lo) = d.ref_many, d.heldout
    wrong_hint = r.prompts.hint[r.prompt[w]] != r.prompts.answer[r.prompt[w]]
    pairs = (w[wrong_hint], lo[wrong_hint])
    return {m: d.rm_accuracy(state.reward_model, r, pairs, m, 1) for m in (1, 2, 4, 6)}


def test_more_passes_check_more_steps_and_lift_accuracy_where_the_hint_is_wrong(tmp_path):
    accs = [_hint_wrong_accuracy(tmp_path, seed) for seed in (0, 1)]
    for acc in accs:  # 5 passes check every step of a 4-step chain and its answer; 1 pass the first
        assert acc[6] > acc[1] + 0.05, accs
        assert acc[6] >= acc[2] - 0.02, accs
