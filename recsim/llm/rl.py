"""Policy-gradient objectives: GRPO and sign-split REINFORCE, with a KL penalty to the reference.

GRPO (Shao et al. 2024): per group of G samples of one prompt, A_i = (r_i - mean r) / (std r + eps);
loss = - mean_tokens A log pi(token) + beta KL(pi || pi_ref), the KL per token by the
non-negative estimator exp(d) - d - 1 with d = log pi_ref - log pi (Schulman 2020).
Sign-split REINFORCE (Zhu et al. 2025) with rewards +1 (correct) / -1 (wrong):
PSR A = +1 on positives, 0 on negatives; NSR A = 0 on positives, -1 on negatives;
W-REINFORCE A = lambda on positives, -1 on negatives.
"""

from __future__ import annotations

import torch

from recsim.mitigations.sign_split import sign_split_advantages  # noqa: F401  (re-exported)


def group_advantages(rewards: torch.Tensor, group: int, eps: float = 1e-6, std: bool = True) -> torch.Tensor:
    """GRPO advantages (r - mean) / (std + eps) per group, or r - mean with ``std=False``.
    rewards [N * G] (groups contiguous) -> [N * G]."""
    r = rewards.view(-1, group)
    centred = r - r.mean(1, keepdim=True)
    return (centred / (r.std(1, keepdim=True) + eps) if std else centred).reshape(-1)


def process_advantages(
    first_wrong: torch.Tensor, steps: torch.Tensor, group: int, max_len: int, eps: float = 1e-6
) -> torch.Tensor:
    """Process-supervised GRPO advantages (Shao et al. 2024, section 4.1.3) -> [N * G, T].

    Response token j (j = 1..d the steps, d + 1 the answer) is a step; its reward is 1 while no
    step up to it is wrong (``first_wrong`` [N * G]: 0 = none, else the 1-based first wrong
    step), else 0. Rewards are normalized by the mean and std over all the steps of the group's
    G responses; a token's advantage is the sum of the normalized rewards of its step and the later
    ones; tokens after the answer get 0. ``steps`` [N * G] is d."""
    j = torch.arange(1, max_len + 1).unsqueeze(0)  # [1, T] the step at token t = j - 1
    valid = j <= (steps + 1).unsqueeze(1)  # [N*G, T]
    fw = first_wrong.unsqueeze(1)
    reward = ((fw == 0) | (j < fw)).double() * valid
    v = valid.double().view(-1, group, max_len)
    r = reward.view(-1, group, max_len)
    count = v.sum((1, 2), keepdim=True)
    mean = r.sum((1, 2), keepdim=True) / count
    sd = ((((r - mean) * v) ** 2).sum((1, 2), keepdim=True) / (count - 1).clamp_min(1)).sqrt()
    norm = (r - mean) / (sd + eps) * v
    adv = norm.flip(-1).cumsum(-1).flip(-1) * v  # own step and the later ones
    return adv.view(-1, max_len).float()


def policy_loss(
    logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, mean per-token KL). logp, ref_logp, mask [N, T]; advantages [N] (one per response)
    or [N, T] (per token)."""
    tokens = mask.sum().clamp_min(1)
    adv = advantages if advantages.dim() == 2 else advantages.unsqueeze(1)
    pg = -(adv * logp * mask).sum() / tokens
    kl = kl_penalty(logp, ref_logp, mask)
    return pg + kl_coef * kl, kl.detach()


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean per-token KL(pi || pi_ref) by the estimator exp(d) - d - 1, d = log pi_ref - log pi."""
    d = (ref_logp - logp) * mask
    return ((torch.exp(d) - d - 1) * mask).sum() / mask.sum().clamp_min(1)


def pass_at_k(n: int, correct: torch.Tensor, k: int) -> torch.Tensor:
    """Unbiased pass@k per prompt from n samples with ``correct`` [M] successes (Chen et al. 2021):
    1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n - c + 1}^{n} (1 - k / i)."""
    if k > n:
        raise ValueError(f"pass@k needs k <= n samples, got k={k}, n={n}")
    c = correct.long()
    i = torch.arange(1, n + 1, dtype=torch.float64)  # [n]
    terms = torch.where(i.unsqueeze(0) > (n - c).unsqueeze(1), 1 - k / i, torch.ones_like(i))  # [M, n]
    return 1 - terms.prod(1)
