"""The chain task: true chains, first wrong steps, format masks, critiques, process advantages,
the labeler's four hacking modes, and the sum task kept bit-identical."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import SHORT_RM_FIT

from recsim.config import validate
from recsim.io.logs import LogStore
from recsim.llm.chain import (
    ChainFormat,
    chain_response,
    corrupt_chain,
    first_wrong,
    make_chain_prompts,
    shortcut_chain,
    true_chain,
)
from recsim.llm.critique import chain_critique_failed
from recsim.llm.domain import Batch, LlmDomain
from recsim.llm.feedback import Rollouts
from recsim.llm.rl import process_advantages
from recsim.llm.tasks import Prompts
from recsim.scenario import load_scenario
from towers.llm_policy import response_mask

FMT = ChainFormat(n_values=32, max_steps=3, conf_bins=4, max_elaboration=2, critiques=True)
ADD, SUB, MUL = 0, 1, 2


def _prompt(x0: int, steps: list[tuple[int, int]], hint: int = 0, concept: int = 0, attribute: int = 1):
    """One hand-written chain prompt (ops by index, operands 1..9)."""
    k = FMT.slots
    ops = torch.full((1, k), -1)
    args = torch.zeros(1, k, dtype=torch.long)
    for j, (op, a) in enumerate(steps):
        ops[0, j], args[0, j] = op, a
    chain = true_chain(FMT, torch.tensor([x0]), ops, args)
    d = len(steps)
    op_tok = torch.where(ops >= 0, FMT.op_base + ops.clamp_min(0), FMT.noop)
    arg_tok = torch.where(ops >= 0, args, FMT.noarg)
    tokens = torch.cat(
        [
            torch.tensor([[x0]]),
            torch.stack([op_tok, arg_tok], 2).reshape(1, 2 * k),
            torch.tensor(
                [[FMT.hint_base + hint, FMT.concept_base + concept, FMT.attribute_base + attribute]]
            ),
        ],
        1,
    )
    return Prompts(
        tokens,
        chain[:, d - 1],
        torch.tensor([d]),
        torch.tensor([hint]),
        torch.tensor([concept]),
        torch.tensor([attribute]),
        chain,
    )


def _response(p: Prompts, steps: list[int], answer: int, conf=1, frame=0, n_elab=1) -> torch.Tensor:
    t = lambda v: torch.tensor([v])  # noqa: E731
    return chain_response(
        FMT,
        torch.tensor([steps + [0] * (FMT.slots - len(steps))]),
        p.difficulty,
        t(answer),
        t(conf),
        t(frame),
        t(n_elab),
    )


def test_true_chain_and_first_wrong_step_on_hand_examples():
    p = _prompt(5, [(ADD, 3), (MUL, 2), (SUB, 9)], hint=7)  # 5 + 3 = 8, 8 * 2 = 16, 16 - 9 = 7
    assert p.chain[0, :3].tolist() == [8, 16, 7] and int(p.answer) == 7
    q = _prompt(30, [(ADD, 4), (MUL, 9)])  # (30 + 4) mod 32 = 2, 2 * 9 = 18
    assert q.chain[0, :2].tolist() == [2, 18]
    zero = torch.zeros(1, dtype=torch.long)
    cases = [
        ([8, 16, 7], 7, 0),  # right throughout
        ([8, 17, 8], 8, 2),  # step 2 wrong, the error carried forward
        ([9, 16, 7], 7, 1),  # a wrong first step, then "right" steps: the first wrong is still 1
        ([8, 16, 7], 6, 4),  # right steps, wrong answer: d + 1
    ]
    for steps, answer, expected in cases:
        tokens = _response(p, steps, answer)
        assert int(first_wrong(FMT, p, zero, tokens)) == expected, (steps, answer)
        r = Rollouts.build(FMT, p, zero, tokens)
        assert int(r.first_wrong) == expected and float(r.correct) == float(answer == 7)
        assert float(r.sound) == float(expected == 0)
        assert float(r.step_accuracy) == pytest.approx(
            sum(a == b for a, b in zip(steps, [8, 16, 7], strict=True)) / 3
        )
        assert float(r.consistent) == float(answer == steps[-1])
        assert float(r.agree) == float(answer == 7)  # the hint is 7


def test_an_agree_answer_is_the_users_hint_whatever_the_steps_gave():
    p = _prompt(5, [(ADD, 3), (MUL, 2), (SUB, 9)], hint=20)  # the true answer is 7
    zero = torch.zeros(1, dtype=torch.long)
    r = Rollouts.build(FMT, p, zero, _response(p, [8, 16, 7], FMT.n_values))  # AGREE
    assert int(r.answer) == 20 and float(r.agree) == 1 and float(r.correct) == 0
    assert float(r.consistent) == 0 and int(r.first_wrong) == 4  # right steps, then deference
    assert FMT.defers(_response(p, [8, 16, 7], FMT.n_values), p.difficulty).tolist() == [True]


def test_response_fields_read_back_and_the_masks_follow_the_layout():
    p = _prompt(5, [(ADD, 3), (MUL, 2)], concept=1, attribute=0)
    tokens = _response(p, [8, 16], 16, conf=3, frame=1, n_elab=2)
    assert tokens[0].tolist() == [
        8,
        16,
        FMT.answer_base + 16,
        FMT.conf_base + 3,
        FMT.frame_base + 1,
        FMT.elab,
        FMT.elab,
    ] + [FMT.eos] * (FMT.max_len - 7)
    r = Rollouts.build(FMT, p, torch.zeros(1, dtype=torch.long), tokens)
    assert float(r.confidence) == pytest.approx(3.5 / 4) and float(r.length) == 2
    assert float(r.concept_match) == 1 and float(r.disfavoured) == 1
    masks = FMT.masks_for(p.tokens)[0]  # [T, V]
    allowed = [set(torch.nonzero(m).squeeze(1).tolist()) for m in masks]
    values = set(range(32))
    assert allowed[0] == allowed[1] == values  # d = 2 steps
    assert allowed[2] == {FMT.answer_base + v for v in values} | {FMT.agree_token}  # or AGREE
    assert allowed[3] == {FMT.conf_base + c for c in range(4)}
    assert allowed[4] == {FMT.frame_base, FMT.frame_base + 1}
    assert allowed[5] == allowed[6] == {FMT.elab, FMT.eos}  # max_elaboration = 2
    assert all(a == {FMT.eos} for a in allowed[7:])


def test_sampled_chains_follow_their_prompts_masks():
    d = LlmDomain(validate({"domain": "llm", "llm": {"sft_steps": 0, "n_prompts": 256}}))
    tokens = d.reference.sample(d.pool.tokens, torch.Generator().manual_seed(0))
    masks = d.fmt.masks_for(d.pool.tokens)  # [N, T, V]
    ok = masks.gather(2, tokens.unsqueeze(2)).squeeze(2)
    assert torch.all(ok | (response_mask(tokens, d.fmt.eos) == 0))
    assert torch.all((tokens == d.fmt.eos).any(1))
    with torch.no_grad():  # the log-probabilities of what was sampled are finite
        assert torch.isfinite(d.reference.log_probs(d.pool.tokens, tokens)).all()


def test_prompts_and_the_base_policys_shortcut_on_hard_prompts():
    fmt = ChainFormat(32, 3, 4, 2, hard=True)
    p = make_chain_prompts(fmt, 4000, 0.4, torch.Generator().manual_seed(0), hard_share=0.3)
    hard = p.difficulty > fmt.max_steps
    assert abs(float(hard.float().mean()) - 0.3) < 0.03 and torch.all(p.difficulty[~hard] <= 3)
    assert abs(float((p.hint != p.answer).float().mean()) - 0.4) < 0.03
    steps, answer = shortcut_chain(fmt, p)
    assert torch.all(answer[hard] != p.answer[hard])  # the skipped add is never the identity
    assert torch.all(answer[~hard] == p.answer[~hard])
    assert torch.all(fmt.steps_of(p.tokens) == p.difficulty)


def test_corrupted_chains_go_wrong_at_their_step_and_carry_the_error():
    fmt = ChainFormat(32, 4, 4, 2)
    p = make_chain_prompts(fmt, 2000, 0.0, torch.Generator().manual_seed(1))
    steps, answer, j = corrupt_chain(fmt, p, torch.Generator().manual_seed(2))
    assert torch.all((j >= 1) & (j <= p.difficulty))
    tokens = chain_response(fmt, steps, p.difficulty, answer, *(torch.zeros(2000, dtype=torch.long),) * 3)
    idx = torch.arange(2000)
    assert torch.all(first_wrong(fmt, p, idx, tokens) == j)
    r = Rollouts.build(fmt, p, idx, tokens)
    assert torch.all(r.consistent == 1)  # the answer follows its own (wrong) chain


def test_the_cot_critique_names_the_first_wrong_step_and_its_value():
    p = _prompt(5, [(ADD, 3), (MUL, 2), (SUB, 9)])
    tokens = torch.cat(
        [_response(p, [8, 17, 8], 8), _response(p, [8, 16, 7], 7), _response(p, [8, 16, 7], 3)]
    )
    prompt = torch.zeros(3, dtype=torch.long)
    cot = chain_critique_failed(FMT, p, prompt, tokens, "cot")
    assert cot.row.tolist() == [0, 2]  # the right response gets none
    assert cot.step.tolist() == [2, 4] and cot.value.tolist() == [16, 7] and cot.truth.tolist() == [7, 7]
    slots = cot.slots(FMT)
    assert slots[0].tolist() == [
        FMT.critique_base,
        FMT.given_base + 8,
        FMT.truth_base + 7,
        FMT.step_base + 2,
        FMT.value_base + 16,
    ]
    binary = chain_critique_failed(FMT, p, prompt, tokens, "binary").slots(FMT)
    assert binary[0, 2:].tolist() == [FMT.critique_pad] * 3
    assert cot.context(FMT, p.tokens[prompt[cot.row]]).shape == (2, FMT.prompt_len + 5)


def test_process_advantages_by_hand():
    # one group of 2: d = 2; the first response right throughout, the second wrong from step 2.
    adv = process_advantages(torch.tensor([0, 2]), torch.tensor([2, 2]), 2, 5)
    # step rewards (3 per response: 2 steps + answer): [1, 1, 1] and [1, 0, 0]; mean 4/6, sd
    r = torch.tensor([1.0, 1, 1, 1, 0, 0])
    z = (r - r.mean()) / r.std()
    expect = torch.tensor(
        [[z[0] + z[1] + z[2], z[1] + z[2], z[2], 0, 0], [z[3] + z[4] + z[5], z[4] + z[5], z[5], 0, 0]]
    )
    assert torch.allclose(adv, expect.float(), atol=1e-5)


def _pairs(d: LlmDomain, n: int, attribute: int, concept_first: bool, correct_first: bool) -> Rollouts:
    """Pairs (2i, 2i + 1) to one prompt: the first framed in the prompt's concept or correct."""
    fmt = d.fmt
    p = make_chain_prompts(fmt, n, 0.0, torch.Generator().manual_seed(3))
    p = Prompts(p.tokens, p.answer, p.difficulty, p.hint, p.concept, torch.full((n,), attribute), p.chain)
    prompt = torch.arange(n).repeat_interleave(2)
    q = p.take(prompt)
    answer = q.answer.clone()
    frame = q.concept.clone()
    if correct_first:
        answer[1::2] = (answer[1::2] + 1) % fmt.n_values
    if concept_first:
        frame[1::2] = 1 - frame[1::2]
    zeros = torch.zeros(2 * n, dtype=torch.long)
    tokens = chain_response(fmt, q.chain, q.difficulty, answer, zeros, frame, zeros)
    return Rollouts.build(fmt, p, prompt, tokens)


@pytest.mark.parametrize(
    ("mode", "attribute", "logit"),
    [("concept", 1, 1.5), ("correct", 1, 2.0), ("correct", 0, 2.0 * (1 - 0.75))],
)
def test_the_labelers_concept_and_discrimination_biases(mode, attribute, logit):
    zero = {"length_bias": 0.0, "sycophancy_bias": 0.0, "confidence_bias": 0.0}
    lab = {**zero, "gold_weight": 2.0, "concept_bias": 1.5, "discrimination_bias": 0.75}
    d = LlmDomain(validate({"domain": "llm", "llm": {"sft_steps": 0, "labeler": lab}}))
    r = _pairs(d, 20_000, attribute, concept_first=mode == "concept", correct_first=mode == "correct")
    labels = d.feedback(d.initial_state(), Batch(r), 0)
    first_wins = float((labels.winner % 2 == 0).double().mean())
    p = 1 / (1 + math.exp(-logit))
    assert first_wins == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / 20_000))


SUM_REFERENCE = Path(__file__).parent / "data" / "llm_sum_reference.json.gz"


def float32_kernels() -> str:
    """A digest of float32 results whose last bits depend on the CPU's kernels (matrix products,
    a GRU, exp and log, one thread): the LLM scenarios' metrics reproduce bit for bit only on CPUs
    whose digests are equal. The same code gives other last bits on another CPU (MKL and oneDNN
    choose their kernels by CPU), and a few rounds of training carry those on into every metric."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(67, 129, generator=g), torch.randn(129, 53, generator=g)
        gru = torch.nn.GRU(24, 40, batch_first=True)
        for w in gru.parameters():
            torch.nn.init.normal_(w, std=0.2, generator=g)
        with torch.no_grad():
            out = [
                a @ b,
                torch.log_softmax(a, -1),
                a.exp().sum(0),
                gru(torch.randn(8, 5, 24, generator=g))[0],
            ]
    finally:
        torch.set_num_threads(threads)
    return hashlib.sha256(b"".join(t.numpy().tobytes() for t in out)).hexdigest()[:16]


def sum_reference() -> Path:
    """The reference written on a CPU with this one's float32 kernels (``data/llm_sum_reference.
    <digest>.json.gz``, :func:`float32_kernels`), or the first one's (written on an Intel CPU with
    AMX), where this CPU has none of its own."""
    own = SUM_REFERENCE.with_name(f"llm_sum_reference.{float32_kernels()}.json.gz")
    return own if own.exists() else SUM_REFERENCE


def _sum_task_rows(name: str, out: Path) -> list[dict]:
    """The metric rows of scenario ``name`` at the reference's sizes with ``llm.task.kind=sum``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sc = load_scenario(name)
        overrides = TINY + FIT_BEFORE + BEFORE.get(name, [])
        return sc.run(sc.resolve(overrides), out).sort("arm", "round").to_dicts()
    finally:
        torch.set_num_threads(threads)


TINY = [
    "llm.n_prompts=64",
    "llm.n_eval_prompts=16",
    "llm.label_prompts=8",
    "llm.initial_prompts=8",
    "llm.batch_prompts=8",
    "llm.pass_k_samples=8",
    "llm.sft_steps=5",
    "llm.policy_steps=1",
    "loop.rounds=2",
    "tracking.enabled=false",
    "llm.task.kind=sum",
]


#: metrics renamed since the reference was written: the per-prompt answer entropy is now
#: answer_entropy (entropy is the served responses' distribution, as the recommender's exposure).
RENAMED = {"entropy": "answer_entropy"}
#: metrics whose definition changed since: spurious_share is now Var(b) / Var(score), one definition
#: for both domains (recsim.core.metrics.score_shares; it was Var(b) / (Var(b) + Var(g))).
#: rm_loss is now the training loss of the fit's best epoch (it was the mean over every epoch's).
REDEFINED = {"spurious_share", "rm_loss"}
#: metrics computed since by other float operations (Brier in closed form in torch instead of
#: scikit-learn's weighted loss): equal to the reference up to rounding, not bit for bit.
ROUNDED = {"brier"}
#: scenario settings changed since (to keep each LLM scenario under four minutes a seed), set back
#: so that the code, not the scenario, is what the reference checks.
BEFORE = {
    "llm-negative-reinforcement": ["llm.rm_refit=true"],
    "llm-calibration": ["llm.rm_refit=true"],  # its rewards are binary and RLCR: fitted once since
}
#: defaults changed since, set back for every scenario: the reward model's fit now stops early on a
#: held-out share of its pairs, within at most 60 epochs (it ran 3 epochs on all of them)
FIT_BEFORE = ["llm.reward_model.epochs=3", "llm.reward_model.heldout_share=0"]


@pytest.mark.parametrize("name", sorted(json.load(gzip.open(SUM_REFERENCE, "rt"))))
def test_the_sum_task_reproduces_its_earlier_results_exactly(tmp_path, name):
    """Every LLM scenario with ``llm.task.kind=sum`` gives the metrics it gave before the chain
    task existed (``data/llm_sum_reference.json.gz``, tiny sizes, one thread), to the last bit
    (``ROUNDED``: to rounding). On a CPU whose float32 kernels round otherwise, the reference is
    the one the same code wrote there (:func:`sum_reference`)."""
    before = json.load(gzip.open(sum_reference(), "rt"))[name]
    rows = _sum_task_rows(name, tmp_path / "r")
    assert len(rows) == len(before)
    for now, old in zip(rows, before, strict=True):
        old = {RENAMED.get(k, k): v for k, v in old.items() if k not in REDEFINED}
        same = {k: now[k] for k in old if k in now}
        assert set(old) <= set(now), set(old) - set(now)
        for k, v in old.items():
            if isinstance(v, float) and math.isnan(v):
                assert math.isnan(same[k]), (now["arm"], now["round"], k)
            elif k in ROUNDED:
                assert same[k] == pytest.approx(v, rel=1e-12, abs=1e-15), (now["arm"], now["round"], k)
            else:
                assert same[k] == v, (now["arm"], now["round"], k, same[k], v)


def test_chain_metrics_recover_each_modes_sensitivity_from_known_scores():
    """Scores built from known weights on each mode's variable: the fitted sensitivities are those
    weights (in the labeler's direction), a mode with weight 0 gets 0 sensitivity and 0 share, and
    a score of correctness alone has spurious_share 0."""
    from recsim.llm.evaluation import chain_metrics

    g = torch.Generator().manual_seed(0)
    d = LlmDomain(validate({"domain": "llm", "llm": {"sft_steps": 0, "n_prompts": 512}}))
    r = d.sample(d.reference, d.pool, 10, g)  # an untrained policy: every variable varies
    length = r.length / d.fmt.max_elaboration
    weights = {"length": 1.5, "sycophancy": 0.0, "confidence": -0.7, "concept": 2.0, "discrimination": 1.2}
    scores = (
        4.0 * r.correct
        + weights["length"] * length
        + weights["confidence"] * r.confidence
        + weights["concept"] * r.concept_match
        - weights["discrimination"] * r.correct * r.disfavoured
    )
    row = chain_metrics(scores, r, d.fmt.max_elaboration)
    for mode, w in weights.items():
        assert row[f"rm_sensitivity_{mode}"] == pytest.approx(w, abs=1e-6), mode
    assert row["spurious_share_sycophancy"] == pytest.approx(0.0, abs=1e-9)
    assert row["spurious_share_concept"] > row["spurious_share_confidence"] > 0
    assert chain_metrics(4.0 * r.correct, r, d.fmt.max_elaboration)["spurious_share"] == pytest.approx(
        0.0, abs=1e-9
    )


def test_the_scenarios_proxy_learns_a_real_but_imperfect_signal(tmp_path):
    """``llm-overoptimization`` at its default size (round 0: 4,096 base-policy prompts, 16,384
    labeled pairs, one pass that reads the first step's check; its base policy is this file's
    seed-0 default, trained once), seed 0: held-out accuracy against
    gold on pairs that differ in correctness 0.722 (seeds 0-4: 0.722, 0.711, 0.747, 0.667, 0.729;
    0.50-0.54 with the 12-step fit it replaced). Imperfect where the labeler is biased: it prefers
    the longer response far more often than the shorter."""
    cfg = load_scenario("llm-overoptimization").resolve(["tracking.enabled=false"])["best-of-n"]
    d = LlmDomain(cfg)
    state = d.initial_state()
    batch = d.act(state, 0)
    logs = LogStore(tmp_path / "logs")
    logs.append(0, "a", d.log_frame(state, batch, d.feedback(state, batch, 0)))
    state = d.fit(state, logs, "a", 0)
    acc = d.rm_accuracy(state.reward_model, d.ref_many, d.heldout)
    by_type = d._heldout_by_type(state.reward_model)
    assert 0.65 <= acc <= 0.85, acc
    assert by_type["rm_accuracy_heldout_longer"] > by_type["rm_accuracy_heldout_shorter"] + 0.15, by_type
    assert state.train["rm_epochs"] < cfg.llm.reward_model.epochs  # it stopped on its held-out split


@pytest.mark.parametrize("seed", [0, 1])
def test_the_base_policys_pass_at_k_rises_through_64_and_stays_below_1(seed):
    """At the default size: pass@1 in 0.2-0.7 (room to improve), pass@64 below 0.95, and pass@k
    rising at every k (measured on seeds 0-2: pass@1 0.24-0.28, pass@64 0.79-0.84; 128 prompts x
    64 samples, so a bound crossed by chance would need a shift of over 2 standard errors)."""
    from recsim.llm.rl import pass_at_k

    d = LlmDomain(validate({"domain": "llm", "seed": seed}))
    k_max = d.cfg.evaluation.pass_k_samples
    n_ok = d.ref_many.correct.view(len(d.eval), k_max).sum(1)
    curve = [float(pass_at_k(k_max, n_ok, k).mean()) for k in (1, 2, 4, 8, 16, 32, 64)]
    assert 0.2 <= curve[0] <= 0.7 and curve[-1] < 0.95, curve
    assert all(b > a for a, b in zip(curve, curve[1:], strict=False)), curve


@pytest.mark.parametrize("seed", [0, 1])
def test_rlcr_calibrates_stated_confidence_on_the_chain_task(tmp_path, seed):
    """RLCR's Brier term lowers the Brier score and ece of stated confidence against binary-reward
    GRPO, without a real loss of accuracy. Five-seed study (64 evaluation prompts x 64 samples):
    after 4 rounds brier -0.034 and ece -0.057 / -0.044 on seeds 0 / 1 (-0.004 and +0.006 on the
    weakest seed, 3); after 6 rounds brier -0.049 [-0.079, -0.018], ece -0.051 [-0.100, -0.001],
    accuracy -0.003 [-0.027, 0.022]. The bounds asserted are under half the seeds' own effects."""
    sc = load_scenario("llm-calibration")
    small = [
        "llm.n_eval_prompts=64",
        "llm.label_prompts=64",
        "llm.initial_prompts=64",
        "tracking.enabled=false",
        *SHORT_RM_FIT,
    ]
    frame = sc.run(sc.resolve([*small, "loop.rounds=4", f"seed={seed}"]), tmp_path / "cal")
    rows = frame.filter(frame["round"] == 3).select("arm", "ece", "brier", "accuracy").iter_rows()
    last = {arm: values for arm, *values in rows}
    (ece_r, brier_r, acc_r), (ece_b, brier_b, acc_b) = last["rlcr"], last["binary"]
    assert brier_r < brier_b - 0.015 and ece_r < ece_b - 0.02, last
    assert acc_r > acc_b - 0.05, last


@pytest.mark.parametrize(
    "llm, mitigations",
    [
        ({"optimization": {"reward": "process"}}, {}),
        (
            {"labeler": {"gold_checks": "steps"}, "reward_model": {"mode": "anchored", "anchor_share": 0.5}},
            {},
        ),
        (
            {"optimization": {"reward": "binary"}},
            {"gate": "gate", "gate_consistency": True, "gate_max_length": 9},
        ),
        ({"critique": {"kind": "cot"}, "optimization": {"reward": "binary"}}, {}),
    ],
)
def test_process_signals_run_end_to_end(tmp_path, llm, mitigations):
    """The process reward, step-checking gold, the consistency gate and chain critiques run a
    round and give finite metrics; the gate rejects exactly the groups with an inconsistent answer."""
    from recsim.core.loop import run_arm
    from recsim.io.logs import LogStore

    tiny = {
        "n_prompts": 64,
        "n_eval_prompts": 16,
        "label_prompts": 8,
        "batch_prompts": 8,
        "pass_k_samples": 8,
    }
    config = validate(
        {
            "domain": "llm",
            "llm": {**tiny, "sft_steps": 5, "policy_steps": 2, **llm},
            "mitigations": mitigations,
        }
    )
    d = LlmDomain(config)
    rows = run_arm(d, "a", 1, LogStore(tmp_path), lambda *a: None)
    assert all(math.isfinite(rows[-1][k]) for k in ("gold", "policy_loss", "step_accuracy", "sound"))
    if mitigations.get("gate_consistency"):
        r = d.sample(d.reference, d.eval, 4, torch.Generator().manual_seed(0))
        assert torch.equal(d.rubric_violation(r), (r.consistent == 0) | (r.agree > 0))


if __name__ == "__main__":
    # python tests/test_chain.py --write-reference: this CPU's reference, from the code that
    # reproduces the first reference bit for bit on the CPU that wrote it; keys and names as there
    import tempfile

    if sys.argv[1:] != ["--write-reference"]:
        sys.exit("usage: python tests/test_chain.py --write-reference")
    first = json.load(gzip.open(SUM_REFERENCE, "rt"))
    target = SUM_REFERENCE.with_name(f"llm_sum_reference.{float32_kernels()}.json.gz")
    written = {}
    for scenario, old_rows in first.items():
        with tempfile.TemporaryDirectory() as tmp:
            rows = _sum_task_rows(scenario, Path(tmp) / "r")
        written[scenario] = [
            {k: row[RENAMED.get(k, k)] for k in old if RENAMED.get(k, k) in row}
            for row, old in zip(rows, old_rows, strict=True)
        ]
    with gzip.open(target, "wt") as f:
        json.dump(written, f)
    print(target)
