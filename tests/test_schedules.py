import pytest
import torch

from diffuse.errors import RequestError
from diffuse.schedules import SCHEDULES, get_sigmas, karras_sigmas


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("n", [1, 2, 10, 50])
def test_schedule_starts_at_sigma_max_ends_at_zero(name, n):
    s = get_sigmas(name, n, 0.002, 80.0)
    assert s.shape == (n + 1,)
    assert s[-1].item() == 0.0
    assert s[0].item() == pytest.approx(80.0, rel=1e-5)
    if n > 1 and name not in ("karras0", "karras1", "cm"):  # karras0 runs its ramp to 0 itself, the others to 1
        assert s[-2].item() == pytest.approx(0.002, rel=1e-4)
    assert torch.all(s[1:] < s[:-1])  # strictly descending


def test_karras_matches_eq5():
    s = karras_sigmas(4, 0.5, 10.0, rho=7)
    ramp = torch.tensor([0, 1 / 3, 2 / 3, 1.0], dtype=torch.float64)
    expected = (10 ** (1 / 7) + ramp * (0.5 ** (1 / 7) - 10 ** (1 / 7))) ** 7
    assert torch.allclose(s[:-1].double(), expected, rtol=1e-6)


def test_bad_schedules():
    with pytest.raises(RequestError, match="steps"):
        get_sigmas("karras", 0)
    with pytest.raises(RequestError, match="unknown schedule"):
        get_sigmas("cosine-ish", 10)


def test_karras0_halves_exactly_and_is_karras_ramp_to_zero():
    from diffuse.schedules import karras0_sigmas
    g4, g8 = karras0_sigmas(4, sigma_max=10.0), karras0_sigmas(8, sigma_max=10.0)
    assert torch.allclose(g8[::2], g4, rtol=1e-6, atol=0) and g4[-1] == 0
    ramp = torch.tensor([0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    assert torch.allclose(g4.double(), (10 ** (1 / 7) * (1 - ramp)) ** 7, rtol=1e-6)


def test_karras1_is_karras_ramp_stopping_at_one():
    from diffuse.schedules import karras1_sigmas
    assert torch.allclose(karras1_sigmas(4), karras_sigmas(4, 1.0, 80.0))
    assert karras1_sigmas(4)[-2].item() == pytest.approx(1.0) and karras1_sigmas(4)[-1] == 0
    assert torch.equal(karras1_sigmas(1), torch.tensor([80.0, 0.0]))  # one step: from sigma_max straight to 0


def test_cm_jumps_to_ten_then_ramps_to_one():
    from diffuse.schedules import cm_sigmas, karras1_sigmas
    assert torch.allclose(cm_sigmas(4), torch.tensor([80.0, 10.0, ((10 ** (1 / 7) + 1) / 2) ** 7, 1.0, 0.0]))
    assert torch.allclose(cm_sigmas(8)[1:-1], karras_sigmas(7, 1.0, 10.0)[:-1])
    for n in (1, 2):  # from sigma_max to 0, or by sigma 1: karras1's levels
        assert torch.equal(cm_sigmas(n), karras1_sigmas(n))
