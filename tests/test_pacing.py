"""Log pacing: one report per interval, standing for every event since the last one."""

from __future__ import annotations

import logging

import pytest

from p2pkube.net.signed import LogThrottle
from p2pkube.pacing import LogPacer


def test_a_pacer_reports_once_per_interval_and_folds_the_rest_into_the_next() -> None:
    pacer = LogPacer()
    assert pacer.report(100.0, 10.0) == 1  # the first event is reported at once
    assert [pacer.report(100.0 + t, 10.0) for t in (1, 2, 9.9)] == [None, None, None]
    assert pacer.report(110.0, 10.0) == 4  # three counted ones and this one
    assert pacer.report(125.0, 10.0) == 1


def test_log_throttle_paces_each_kind_apart(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.pacing")
    throttle = LogThrottle(logger, interval=3600.0)
    with caplog.at_level(logging.WARNING, logger="test.pacing"):
        for i in range(5):
            throttle.warning("forged", "forged record %d", i)
        throttle.warning("late", "late record")
    assert [r.getMessage() for r in caplog.records] == ["forged record 0", "late record"]
    throttle.interval = 0.0
    with caplog.at_level(logging.WARNING, logger="test.pacing"):
        throttle.warning("forged", "forged record %d", 5)
    assert (
        caplog.records[-1]
        .getMessage()
        .startswith("forged record 5 (and 4 more like it in the last")
    )
