"""The one back-off helper (p2pkube/backoff.py), with a deterministic random source."""

from __future__ import annotations

import itertools

import pytest

from p2pkube.backoff import Backoff


def draws(*values: float) -> itertools.cycle[float]:
    """A random source that returns ``values`` over and over."""
    return itertools.cycle(values)


def test_delay_doubles_up_to_the_maximum_and_reset_starts_over() -> None:
    backoff = Backoff(1.0, 10.0)
    assert [backoff.next() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    backoff.reset()
    assert backoff.current == 1.0
    assert backoff.next() == 1.0


def test_current_reads_the_delay_without_advancing_it() -> None:
    backoff = Backoff(0.5, 15.0, factor=3.0)
    assert backoff.current == backoff.current == 0.5
    assert backoff.next() == 0.5
    assert backoff.current == 1.5


def test_without_spread_no_random_number_is_drawn() -> None:
    def rand() -> float:
        raise AssertionError("an exact back-off must not draw")

    assert Backoff(1.0, 60.0, rand=rand).next() == 1.0


def test_spread_scales_each_wait_like_random_uniform() -> None:
    source = draws(0.0, 0.5, 0.999)
    backoff = Backoff(1.0, 100.0, spread=(0.8, 1.2), rand=lambda: next(source))
    waits = [backoff.next() for _ in range(3)]
    assert waits == pytest.approx([0.8, 2.0, 4 * (0.8 + 0.4 * 0.999)])
    # The jitter never feeds back into the delay: it still doubles exactly.
    assert backoff.current == 8.0


def test_jitter_taken_off_as_the_signaling_client_does() -> None:
    """spread (1, 1 - j) waits ``delay * (1 - j * rand())``: between (1 - j) and all of it."""
    source = draws(0.0, 0.5)
    backoff = Backoff(0.5, 10.0, spread=(1.0, 1.0 - 0.5), rand=lambda: next(source))
    assert backoff.next() == 0.5
    assert backoff.next() == pytest.approx(1.0 * (1 - 0.5 * 0.5))


def test_an_exact_wait_still_grows_the_next_one() -> None:
    backoff = Backoff(0.5, 15.0, spread=(0.8, 1.2), rand=lambda: 0.0)
    assert backoff.next(jitter=False) == 0.5
    assert backoff.next() == pytest.approx(1.0 * 0.8)


def test_first_delay_is_taken_as_given_later_ones_are_capped() -> None:
    backoff = Backoff(5.0, 2.0)
    assert [backoff.next() for _ in range(3)] == [5.0, 2.0, 2.0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": -1.0, "maximum": 1.0},
        {"initial": 1.0, "maximum": -1.0},
        {"initial": 1.0, "maximum": 2.0, "factor": 0.5},
        {"initial": 1.0, "maximum": 2.0, "spread": (-0.1, 1.0)},
    ],
)
def test_settings_that_would_shrink_or_go_negative_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)
