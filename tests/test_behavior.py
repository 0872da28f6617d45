"""Click models: empirical rates match their definitions (fixed seeds, binomial tolerances)."""

from __future__ import annotations

import pytest
import torch

from recsim.recsys.behavior import click_probability, examination_curve, simulate


def test_examination_curve_is_power_law_with_top_at_one():
    theta = examination_curve(torch.tensor([1.2, 0.6, 0.0]), 5)
    k = torch.arange(1, 6, dtype=torch.float32)
    assert theta.shape == (3, 5)
    torch.testing.assert_close(theta[0], k**-1.2)
    torch.testing.assert_close(theta[1], k**-0.6)
    assert torch.all(theta[2] == 1)
    assert torch.all(theta[:, 0] == 1)


def _slates(n: int, k: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    rel = torch.rand(k, generator=g).expand(n, k).contiguous()
    sat = torch.rand(k, generator=g).expand(n, k).contiguous()
    device = torch.arange(n) % 2
    return rel, sat, device


def _assert_rates_match(click: torch.Tensor, exact: torch.Tensor, device: torch.Tensor) -> None:
    """Per device, each position's click rate is within 5 standard errors of its exact probability
    (the slates of one device share their relevances, so row 0 stands for all)."""
    for d in device.unique().tolist():
        rows = device == d
        rate = click[rows].double().mean(0)
        expected = exact[rows][0].double()
        se = (expected * (1 - expected) / rows.sum()).sqrt()
        assert torch.all((rate - expected).abs() < 5 * se + 1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pbm_click_rate_matches_theta_times_relevance(seed):
    n, k = 200_000, 6
    rel, sat, device = _slates(n, k, seed)
    theta = examination_curve(torch.tensor([1.2, 0.6]), k)
    fb = simulate("pbm", theta, device, rel, sat, torch.Generator().manual_seed(100 + seed))
    for d in (0, 1):
        rows = device == d
        rate = fb.click[rows].double().mean(0)
        expected = (theta[d] * rel[0]).double()
        # Binomial standard error with n/2 draws per cell; 5 sigma keeps 36 cells x 3 seeds safe.
        se = (expected * (1 - expected) / rows.sum()).sqrt()
        assert torch.all((rate - expected).abs() < 5 * se + 1e-4), (rate, expected)
    torch.testing.assert_close(fb.examination, theta[device])


def test_satisfaction_only_after_click_at_true_rate():
    n, k = 200_000, 4
    rel, sat, device = _slates(n, k, 7)
    theta = examination_curve(torch.tensor([0.8, 0.8]), k)
    fb = simulate("pbm", theta, device, rel, sat, torch.Generator().manual_seed(3))
    assert not torch.any(fb.satisfaction & ~fb.click)
    clicked = fb.click.double().sum(0)
    rate = fb.satisfaction.double().sum(0) / clicked
    se = (sat[0].double() * (1 - sat[0].double()) / clicked).sqrt()
    assert torch.all((rate - sat[0].double()).abs() < 5 * se)


def test_cascade_matches_its_exact_click_probability_and_stops_after_a_click():
    n, k = 200_000, 5
    rel, sat, device = _slates(n, k, 11)
    theta = examination_curve(torch.tensor([1.0, 0.5]), k)
    fb = simulate("cascade", theta, device, rel, sat, torch.Generator().manual_seed(5))
    assert int(fb.click.sum(1).max()) == 1  # at most one click per slate
    exact = click_probability("cascade", theta[device], rel)
    _assert_rates_match(fb.click, exact, device)
    # With nothing attractive above, cascade examination equals the PBM curve; below an attractive
    # item it is discounted by the chance of a click there, 1 - rel.
    rel = torch.zeros(3, k)
    rel[:, 2], rel[:, 4] = torch.tensor([0.3, 0.6, 0.9]), 0.5
    cascade, pbm = click_probability("cascade", theta[:1], rel), click_probability("pbm", theta[:1], rel)
    torch.testing.assert_close(cascade[:, :3], pbm[:, :3])
    torch.testing.assert_close(cascade[:, 4], pbm[:, 4] * (1 - rel[:, 2]))


def test_choice_picks_exactly_one_item_in_proportion_to_attention_times_relevance():
    n, k = 200_000, 5
    rel, sat, device = _slates(n, k, 13)
    theta = examination_curve(torch.tensor([1.0, 0.5]), k)
    fb = simulate("choice", theta, device, rel, sat, torch.Generator().manual_seed(6))
    assert torch.all(fb.click.sum(1) == 1)  # one interaction per slate, always
    exact = click_probability("choice", theta[device], rel)
    torch.testing.assert_close(exact.sum(1), torch.ones(n))
    w = theta[device] * rel
    torch.testing.assert_close(exact, w / w.sum(1, keepdim=True))
    _assert_rates_match(fb.click, exact, device)


def test_logit_model_adds_log_theta_to_the_click_logit():
    n, k = 200_000, 5
    rel, sat, device = _slates(n, k, 17)
    theta = examination_curve(torch.tensor([1.0, 0.5]), k)
    exact = click_probability("logit", theta[device], rel)
    torch.testing.assert_close(torch.logit(exact) - torch.logit(rel), theta[device].log(), atol=1e-4, rtol=0)
    torch.testing.assert_close(exact[:, 0], rel[:, 0])  # theta(1) = 1: the top shows relevance itself
    fb = simulate("logit", theta, device, rel, sat, torch.Generator().manual_seed(7))
    _assert_rates_match(fb.click, exact, device)


def test_click_probability_pbm_is_product():
    exam = torch.tensor([[1.0, 0.5]])
    rel = torch.tensor([[0.4, 0.2]])
    torch.testing.assert_close(click_probability("pbm", exam, rel), torch.tensor([[0.4, 0.1]]))
    torch.testing.assert_close(click_probability("cascade", exam, rel), torch.tensor([[0.4, 0.06]]))


def test_unknown_model_is_rejected():
    rel, sat, device = _slates(4, 2, 0)
    with pytest.raises(ValueError, match="pbm"):
        simulate("dcm", examination_curve(torch.tensor([1.0, 1.0]), 2), device, rel, sat, torch.Generator())
