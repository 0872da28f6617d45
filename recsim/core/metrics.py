"""Cascade metrics. One definition per name, shared by every domain that gives the name meaning.

| name              | definition (recommender domain)                                                   |
|-------------------|-----------------------------------------------------------------------------------|
| gold              | true expected clicks per served slate: mean_u sum_k theta(k, d_u) rel(u, i_k)     |
| gold_satisfaction | true expected satisfied clicks per slate: mean_u sum_k theta rel sat              |
| proxy             | the learner's own estimate of the same: mean_u sum_k theta(k, d_u) p_hat(u, i_k)  |
| gap               | proxy - gold (clicks per slate): the learner's over(+)/under(-)estimate of itself |
| clicks            | observed clicks per slate (the biased signal the learner is fed)                  |
| regret            | gold of the oracle's slates from the same candidates - gold                       |
| ndcg_truth        | NDCG@K (Jarvelin & Kekalainen 2002) of the learner's order of every available item |
|                   | on the panel, gains = the true value of the objective it serves: w_c rel +        |
|                   | w_s rel sat for a multi-task ranker serving w_c p_click + w_s p_click p_sat, rel  |
|                   | for a learner that serves click relevance                                          |
| ndcg_click        | the same NDCG@K with gains = true click relevance rel for every learner           |
| gini              | Gini coefficient of item exposure (impressions per available item) this round     |
| entropy           | Shannon entropy (nats) of the exposure distribution over available items          |
| coverage          | share of available items shown at least once this round                           |
| homogenization    | Chaney et al. 2018: mean Jaccard of the item sets panel users have interacted with |
|                   | so far and their nearest neighbour's (by true taste), minus the same under the     |
|                   | ideal recommender                                                                 |
| jaccard           | that mean Jaccard of the learner's interaction histories                          |
| homogenization_topk, jaccard_topk | the same on this round's top-K lists, against the oracle's lists  |
| rank_stability    | mean Kendall tau, per panel user, of scores now vs last round over the same items |
| ece               | expected calibration error of p_hat vs true relevance on served impressions       |
| brier             | expected Brier score of p_hat on served impressions: E[(p_hat - y)^2], y ~ Bern(rel) |
| spurious_share    | share of the served score's variance explained by what the loop did to each item    |
|                   | (impressions, mean position) rather than by true relevance, on the panel; the     |
|                   | same fit in the LLM domain (:func:`score_shares`); truth_share: by the truth      |
| position_share    | share of the training click score's variance carried by its position channel       |

The panel is a fixed random set of users (``metrics.panel_users``) drawn at set-up; it takes part in
the loop like any user, and every available item is scored for it.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def gini(exposure: torch.Tensor) -> float:
    """Gini coefficient of a non-negative vector, 0 (equal) to 1 - 1/n (one item gets all).

    G = sum_i (2 i - n - 1) x_(i) / (n sum_i x_i), x sorted ascending, i = 1..n.

    >>> gini(torch.tensor([1.0, 1.0, 1.0, 1.0]))
    0.0
    >>> gini(torch.tensor([0.0, 0.0, 0.0, 4.0]))
    0.75
    """
    x = exposure.double().sort().values
    n = x.numel()
    total = x.sum()
    if n == 0 or total <= 0:
        return 0.0
    i = torch.arange(1, n + 1, dtype=x.dtype)
    return float(((2 * i - n - 1) * x).sum() / (n * total))


def entropy(exposure: torch.Tensor) -> float:
    """Shannon entropy in nats of ``exposure / exposure.sum()`` (log n for uniform exposure):
    H = -sum_i p_i log p_i, 0 log 0 = 0 (``scipy.stats.entropy``'s definition, in torch; equal to
    it up to float rounding).

    >>> round(entropy(torch.ones(8)), 6) == round(float(np.log(8)), 6)
    True
    """
    x = exposure.double().flatten()
    total = x.sum()
    if total <= 0:
        return 0.0
    p = x / total
    return float(-torch.special.xlogy(p, p).sum())


def coverage(exposure: torch.Tensor) -> float:
    """Share of entries with positive exposure.

    >>> coverage(torch.tensor([0.0, 3.0, 1.0, 0.0]))
    0.5
    """
    return float((exposure > 0).double().mean())


def mean_jaccard(sets: torch.Tensor, partner: torch.Tensor, n_items: int) -> float:
    """Mean Jaccard index |A_p & A_q| / |A_p | A_q| between each row's item set and its partner's.

    sets [P, K] long item ids (distinct within a row); partner [P] long row index.

    >>> mean_jaccard(torch.tensor([[0, 1], [1, 2]]), torch.tensor([1, 0]), 3)
    0.3333333333333333
    """
    member = torch.zeros(sets.shape[0], n_items, dtype=torch.bool)
    member.scatter_(1, sets, True)
    inter = (member & member[partner]).sum(1).double()
    union = (member | member[partner]).sum(1).double()
    return float((inter / union).mean())


def mean_jaccard_keys(keys: torch.Tensor, partner: torch.Tensor, n_items: int) -> float:
    """Mean Jaccard index between each user's item set and its partner's, for sets of any size
    given as distinct keys ``user * n_items + item`` (int64); partner [P] long. Two empty sets
    count 0 (nothing shared).

    >>> mean_jaccard_keys(torch.tensor([0, 1, 4, 5]), torch.tensor([1, 0]), 3)  # {0, 1} vs {1, 2}
    0.3333333333333333
    """
    n_users = partner.shape[0]
    users, items = keys // n_items, keys % n_items
    size = torch.bincount(users, minlength=n_users).double()
    shared = torch.isin(partner[users] * n_items + items, keys).double()
    inter = torch.bincount(users, weights=shared, minlength=n_users)
    union = size + size[partner] - inter
    return float(torch.where(union > 0, inter / union.clamp_min(1), 0.0).mean())


def nearest_neighbours(factors: torch.Tensor) -> torch.Tensor:
    """[P, D] -> [P] index of each row's most cosine-similar other row."""
    unit = factors / factors.norm(dim=1, keepdim=True).clamp_min(1e-12)
    sim = unit @ unit.T
    sim.fill_diagonal_(-float("inf"))
    return sim.argmax(1)


def ece(pred: torch.Tensor, truth: torch.Tensor, bins: int = 10) -> float:
    """Expected calibration error against known true probabilities.

    ECE = sum_b (n_b / n) |mean_{b} p_hat - mean_{b} q|, equal-width bins of p_hat on [0, 1].
    With the truth q known, the bin's mean q replaces the bin's empirical outcome rate
    (same expectation, no sampling noise). Guo et al. 2017; Naeini et al. 2015.

    >>> ece(torch.tensor([0.2, 0.8]), torch.tensor([0.2, 0.8]))
    0.0
    """
    p = pred.flatten().double()
    q = truth.flatten().double()
    idx = (p * bins).long().clamp(0, bins - 1)
    diff = torch.bincount(idx, weights=p, minlength=bins) - torch.bincount(idx, weights=q, minlength=bins)
    return float(diff.abs().sum() / max(p.numel(), 1))


def brier(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """Expected Brier score E[(p_hat - y)^2] with y ~ Bernoulli(q) (Brier 1950), in closed form:
    mean(q (1 - p_hat)^2 + (1 - q) p_hat^2) = mean((p_hat - q)^2 + q (1 - q)).

    >>> brier(torch.tensor([0.5]), torch.tensor([1.0]))
    0.25
    """
    p = pred.flatten().double()
    q = truth.flatten().double()
    if p.numel() == 0:
        return float("nan")
    return float((q * (1 - p) ** 2 + (1 - q) * p**2).mean())


def ndcg_at_k(truth: torch.Tensor, scores: torch.Tensor, k: int) -> float:
    """Mean NDCG@k of each row's ``scores`` order, with ``truth`` [P, N] as graded gains.

    DCG@k = sum_i g_(i) / log2(i + 1) over the first k positions of the score order (Jarvelin and
    Kekalainen 2002); tied scores share the mean gain of their tie group, so the value does not
    depend on how ties are broken (McSherry and Najork 2008); divided by the DCG@k of the truth's own
    order, 0 for a row with no positive gain. scikit-learn's ``ndcg_score`` (``ignore_ties=False``)
    by definition, batched in torch (equal up to float rounding; ``tests/test_speed.py``). Only the
    top k of each row is ordered (``topk``, 1.8 ms against 13 ms for two sorts of 256 x 1,000 here).

    >>> ndcg_at_k(torch.tensor([[3.0, 2.0, 0.0]]), torch.tensor([[0.9, 0.5, 0.1]]), 2)
    1.0
    >>> round(ndcg_at_k(torch.tensor([[3.0, 2.0, 0.0]]), torch.tensor([[0.5, 0.5, 0.5]]), 2), 6)
    0.637801
    """
    t, s = truth.double(), scores.double()
    kk = min(k, t.shape[1])
    if kk < 1:
        return float("nan") if t.shape[0] == 0 else 0.0
    discount = 1 / (torch.log(torch.arange(kk, dtype=torch.float64) + 2) / math.log(2))
    # Only the first k positions have a discount: the k largest scores (a top-k, not a sort of N).
    sorted_s, order = torch.topk(s, kk, dim=1)  # [P, k] descending, ties next to each other
    gains = torch.gather(t, 1, order)
    group = _run_starts(sorted_s).long().cumsum(1) - 1  # [P, k] tie group of each position
    group_gain = torch.zeros_like(gains).scatter_add_(1, group, gains)
    group_size = torch.zeros_like(gains).scatter_add_(1, group, torch.ones_like(gains))
    group_discount = torch.zeros_like(gains).scatter_add_(1, group, discount.expand_as(gains))
    # The last group, ties of the k-th score, may go on past position k: its mean gain is over
    # every score equal to it, whichever of them the top-k kept.
    tied = s == sorted_s[:, -1:]  # [P, N]
    last = group[:, -1:]
    group_gain.scatter_(1, last, torch.where(tied, t, 0.0).sum(1, keepdim=True))
    group_size.scatter_(1, last, tied.sum(1, keepdim=True, dtype=torch.float64))
    dcg = (group_gain / group_size.clamp_min(1) * group_discount).sum(1)
    ideal = (torch.topk(t, kk, dim=1).values * discount).sum(1)
    ndcg = torch.where(ideal > 0, dcg / torch.where(ideal > 0, ideal, 1.0), 0.0)
    return float(ndcg.mean())


def rank_stability(prev: torch.Tensor, now: torch.Tensor) -> float:
    """Mean Kendall tau-b between two score vectors per row. prev, now [P, N].

    Each row's tau is scipy's ``kendalltau(prev[i], now[i]).statistic``, bit for bit (the same
    integer counts and the same float64 operations; ``tests/test_speed.py`` checks it), computed for
    all rows at once by :func:`kendall_tau_b`; rows whose tau is undefined (a constant row, or a
    NaN score) are left out of the mean, as before.

    >>> a = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    >>> rank_stability(a, torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]))
    0.0
    """
    taus = kendall_tau_b(prev, now).numpy()
    taus = taus[np.isfinite(taus)]
    return float(np.mean(taus)) if len(taus) else float("nan")


def kendall_tau_b(x: torch.Tensor, y: torch.Tensor, chunk_elements: int = 1 << 22) -> torch.Tensor:
    """Kendall's tau-b of each row pair (x [P, N], y [P, N]) -> [P] float64, NaN where undefined.

    tau_b = (n0 - n1 - n2 + n3 - 2 n_d) / sqrt((n0 - n1)(n0 - n2)), with n0 = N(N - 1)/2 pairs,
    n1 / n2 the pairs tied in x / y, n3 those tied in both, n_d the discordant pairs (Kendall 1945;
    the formula and operation order of ``scipy.stats.kendalltau``). n_d is counted as the
    inversions of y's ranks in (x, y) order, by a bottom-up merge: blocks of 16 compared pair by
    pair, then log2(N / 16) levels, each one batched sort over every row at once, O(P N log N).
    Rows go in chunks of about ``chunk_elements`` values.

    >>> kendall_tau_b(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[1.0, 3.0, 2.0, 4.0]]))
    tensor([0.6667], dtype=torch.float64)
    """
    if x.shape != y.shape or x.dim() != 2:
        shapes = f"{tuple(x.shape)}, {tuple(y.shape)}"
        raise ValueError(f"kendall_tau_b: x and y must both be [P, N], got {shapes}")
    rows = max(1, chunk_elements // max(x.shape[1], 1))
    parts = [_tau_b(x[i : i + rows], y[i : i + rows]) for i in range(0, x.shape[0], rows)]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.float64)


def _run_starts(sorted_v: torch.Tensor) -> torch.Tensor:
    """[P, N] bool: where each run of equal values of a row-sorted tensor begins."""
    new = torch.ones_like(sorted_v, dtype=torch.bool)
    new[:, 1:] = sorted_v[:, 1:] != sorted_v[:, :-1]
    return new


def _dense_ranks(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row, 1 + the number of distinct smaller values ([P, N] float -> int64): (the ranks in
    the values' places, the same ranks in ascending order, the order that sorts the row)."""
    sorted_v, order = torch.sort(v, dim=1)
    ranks = _run_starts(sorted_v).long().cumsum(1)
    return torch.empty_like(order).scatter_(1, order, ranks), ranks, order


def _tied_pairs(sorted_v: torch.Tensor) -> torch.Tensor:
    """Per row of a row-sorted [P, N] tensor: the pairs of equal values, sum over runs of c(c-1)/2."""
    n = sorted_v.shape[1]
    pos = torch.arange(n, device=sorted_v.device).expand_as(sorted_v)
    start = torch.where(_run_starts(sorted_v), pos, torch.zeros_like(pos)).cummax(dim=1).values
    return (pos - start).sum(1)  # each value counts the equal values before it


def _inversions(seq: torch.Tensor) -> torch.Tensor:
    """Per row of an int64 [P, N] tensor: pairs i < j with seq[i] > seq[j] (bottom-up merge count)."""
    p, n = seq.shape
    m = 1 << max(n - 1, 0).bit_length()
    cur = torch.cat([seq, seq.new_full((p, m - n), int(seq.max()) + 1 if n else 0)], dim=1)
    # Blocks of up to 16 by direct comparison of every pair (i < j), then merge levels upward.
    s = min(m, 16)
    blocks = cur.view(p, m // s, s)
    later = torch.ones(s, s, dtype=torch.bool, device=seq.device).triu(1)
    # summed as int32 (at most 120 a block): a bool tensor's sum into int64 is 10x slower here
    inverted = (blocks.unsqueeze(-1) > blocks.unsqueeze(-2)) & later
    count = inverted.view(p, -1).sum(1, dtype=torch.int32).long()
    cur = torch.sort(blocks, dim=-1).values.view(p, m)
    # Each level merges sorted pairs of blocks (left L, right R) by one sort of 2 * value + side,
    # which puts L before R on equal values. The t-th element of L, at place q of the merged
    # block, then has q - t elements of R before it, the smaller ones: summed over L, the places
    # of L's elements less 0 + 1 + ... + (s - 1).
    while s < m:
        side = torch.arange(2, device=seq.device).repeat_interleave(s).repeat(m // (2 * s))
        key = torch.sort((cur * 2 + side).view(p, m // (2 * s), 2 * s), dim=-1).values
        place = torch.arange(2 * s, device=seq.device)
        left_places = (key & 1).bitwise_xor_(1).mul_(place).sum((1, 2))
        count += left_places - (m // (2 * s)) * (s * (s - 1) // 2)
        cur = (key >> 1).view(p, m)
        s *= 2
    return count


def _tau_b(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    n = x.shape[1]
    (rx, sorted_rx, x_order), (ry, sorted_ry, _) = _dense_ranks(x), _dense_ranks(y)  # no float64
    # (x, y) order. In a row without ties in x (most rows of learned scores) it is x's own order,
    # and no pair is tied in both; the rows with ties sort by (x rank, y rank).
    order, ntie = x_order, torch.zeros(len(x), dtype=torch.long, device=x.device)
    tied = (sorted_rx[:, -1] != n).nonzero().squeeze(1) if n else order.new_empty(0)
    if len(tied):
        key, order[tied] = torch.sort(rx[tied] * (n + 1) + ry[tied], dim=1)
        ntie[tied] = _tied_pairs(key)
    dis = _inversions(torch.gather(ry, 1, order))
    xtie = _tied_pairs(sorted_rx)
    ytie = _tied_pairs(sorted_ry)
    tot = n * (n - 1) // 2
    con_minus_dis = tot - xtie - ytie + ntie - 2 * dis
    # numpy's sqrt: correctly rounded, as scipy's; torch's vectorized float64 sqrt is 1 ulp off for
    # about 1.4% of values on some CPUs (AVX-512 on AMD EPYC)
    root_x, root_y = (torch.from_numpy(np.sqrt((tot - t).double().cpu().numpy())) for t in (xtie, ytie))
    tau = con_minus_dis.double() / root_x.to(x.device) / root_y.to(x.device)
    tau = tau.clamp(-1.0, 1.0)
    undefined = (xtie == tot) | (ytie == tot) | x.isnan().any(1) | y.isnan().any(1)
    return tau.masked_fill(undefined, float("nan"))


def position_curve_error(learned: torch.Tensor, true: torch.Tensor) -> float:
    """Mean absolute difference of log-examination offsets relative to position 1.

    learned, true [V, K]: offsets log theta(k, d) - log theta(1, d) (learned from the learner's
    position channel; true from the world). Averaged over devices and positions k >= 2 (position 1
    is 0 in both by construction).

    >>> position_curve_error(torch.tensor([[0.0, -0.5, -1.0]]), torch.tensor([[0.0, -0.7, -1.0]]))
    0.09999999403953552
    """
    return float((learned[:, 1:] - true[:, 1:]).abs().mean())


def variance_share(truth_part: torch.Tensor, spurious_part: torch.Tensor) -> float:
    """Var(b) / (Var(b) + Var(g)): the share of a score's variance its spurious part b carries
    rather than its truth part g (both [N], additive parts of one score). 0 if both are constant.

    >>> variance_share(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 0.0]))
    0.0
    """
    vb = float(spurious_part.double().var())
    vg = float(truth_part.double().var())
    return vb / (vb + vg) if vb + vg > 0 else 0.0


def least_squares_split(
    scores: torch.Tensor, columns: list[torch.Tensor], chunk: int = 1 << 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Least squares of ``scores`` [N] on an intercept and ``columns`` (each [N]; the truth first,
    then the spurious variables). Returns (coefficients [C], the centred design [N, C], float64).

    Normal equations with torch's own reductions (in chunks of ``chunk`` rows, so a panel of
    millions of pairs does not build an [N, C, C] product), solved in Python floats: LAPACK's least
    squares gave results that differ in the last bits from call to call in a busy process, and a
    run must reproduce itself exactly.
    """
    x = torch.stack(columns, 1).double()
    x = x - x.mean(0)
    y = scores.double() - scores.double().mean()
    gram = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
    rhs = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for s in range(0, x.shape[0], chunk):
        xc, yc = x[s : s + chunk], y[s : s + chunk]
        gram = gram + (xc.unsqueeze(2) * xc.unsqueeze(1)).sum(0)
        rhs = rhs + (xc * yc.unsqueeze(1)).sum(0)
    coef = torch.tensor(_solve_psd(gram.tolist(), rhs.tolist()), dtype=torch.float64, device=x.device)
    return coef, x


def score_shares(
    scores: torch.Tensor, truth: torch.Tensor, spurious: list[torch.Tensor]
) -> tuple[float, float]:
    """(spurious_share, truth_share) of a served learner's scores: with scores ~ c_0 + c_g truth +
    sum_j c_j z_j fitted by least squares over the served units, g = c_g truth and
    b = sum_j c_j z_j (centred), spurious_share = Var(b) / Var(scores) and truth_share =
    Var(g) / Var(scores): the shares of the score's variance the spurious variables and the truth
    explain (they need not add up to 1: the rest is what neither explains, and twice their
    covariance). 0 for a constant score.

    One definition in both domains (Wang et al. 2025 measure reward hacking as the reward's
    dependence on spurious attributes; the recommender's spurious variables are those its own loop
    creates). LLM: the reward model's scores of the served responses; truth = correctness; z =
    length, agreement with the user's hint, stated confidence (chain task: also concept framing and
    correctness x disfavoured user). Recommender: the ranker's serving score of every available
    item for the panel; truth = true relevance; z = how often (log1p impressions) and where (mean
    position; K + 1 if never shown) the loop showed the item, accumulated over the rounds so far.
    Logged clicks are not among z: a click is evidence of relevance, and a learner that follows
    its clicks is learning, not hacking.

    >>> t = torch.tensor([0.0, 1.0, 0.0, 1.0]); z = torch.tensor([0.0, 0.0, 1.0, 1.0])
    >>> [round(v, 6) for v in score_shares(2 * t + z, t, [z])]
    [0.2, 0.8]
    """
    coef, x = least_squares_split(scores, [truth, *spurious])
    y = scores.double()
    vy = float(y.var())
    if vy <= 0:
        return 0.0, 0.0
    return float((x[:, 1:] @ coef[1:]).var()) / vy, float((x[:, 0] * coef[0]).var()) / vy


def _solve_psd(a: list[list[float]], b: list[float]) -> list[float]:
    """Solve (A + eps I) c = b for a small positive semi-definite A by Cholesky, in Python floats
    (deterministic). eps = 1e-12 trace(A) keeps a constant feature (a zero row and column) at
    coefficient 0 instead of making the system singular."""
    n = len(b)
    eps = 1e-12 * max(sum(a[i][i] for i in range(n)), 1e-300)
    low = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1):
            acc = a[i][j] + (eps if i == j else 0.0) - sum(low[i][k] * low[j][k] for k in range(j))
            low[i][j] = math.sqrt(max(acc, 1e-300)) if i == j else acc / low[j][j]
    z = [0.0] * n
    for i in range(n):  # L z = b
        z[i] = (b[i] - sum(low[i][k] * z[k] for k in range(i))) / low[i][i]
    c = [0.0] * n
    for i in reversed(range(n)):  # L^T c = z
        c[i] = (z[i] - sum(low[k][i] * c[k] for k in range(i + 1, n))) / low[i][i]
    return c
