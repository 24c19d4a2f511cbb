"""The shared beat (p2pkube/ticker.py): periodic chores of one process wake together."""

from __future__ import annotations

import asyncio

import pytest

from p2pkube.ticker import Ticker, first_beat_after, nearest_beat, next_beat


def test_beats_are_a_period_apart_and_never_the_one_we_are_on() -> None:
    period = 0.5
    beat = next_beat(period, 1000.0)
    assert 1000.0 + period / 2 <= beat < 1000.0 + 1.5 * period
    # Woken on the beat, or a little early (asyncio runs timers up to its clock resolution
    # ahead) or late: the next beat is one period on, not the same one again.
    for woke in (beat, beat - 1e-6, beat + 0.01):
        assert abs(next_beat(period, woke) - (beat + period)) < 1e-9


def test_chores_whose_periods_divide_each_other_share_their_beats() -> None:
    now = 12345.678
    half, one, five = next_beat(0.5, now), next_beat(1.0, now), next_beat(5.0, now)
    # Every beat of a longer period is also a beat of the shorter one.
    for longer in (one, five):
        steps = (longer - half) / 0.5
        assert abs(steps - round(steps)) < 1e-6


async def test_tickers_of_one_period_wake_in_the_same_loop_iteration() -> None:
    loop = asyncio.get_running_loop()
    woke: list[float] = []

    async def chore() -> None:
        await Ticker(0.2).tick()
        woke.append(loop.time())

    await asyncio.gather(*(chore() for _ in range(5)))
    assert max(woke) - min(woke) < 0.005, woke


def test_a_deadline_moves_to_the_nearest_beat_and_a_sack_to_the_first() -> None:
    period = 0.5
    beat = next_beat(period, 50.0)
    assert nearest_beat(period, beat + 0.2) == pytest.approx(beat)
    assert nearest_beat(period, beat + 0.3) == pytest.approx(beat + period)
    assert first_beat_after(period, beat) == pytest.approx(beat + period)
    assert first_beat_after(period, beat - 0.01) == pytest.approx(beat)
