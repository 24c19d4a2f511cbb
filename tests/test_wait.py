"""``p2pkube wait --for``: the conditions it parses and how each judges an object (the command
itself, against real agents, is in tests/test_progress_cluster.py)."""

from __future__ import annotations

from typing import Any

import pytest

from p2pkube.cli.wait import parse_condition

POD: dict[str, Any] = {
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "status": {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized"}],
        "containerStatuses": [{"restartCount": 2}, {"restartCount": 0}],
    },
}


@pytest.mark.parametrize(
    ("text", "met"),
    [
        ("condition=Ready", True),
        ("condition=ready", True),  # kubectl compares types and statuses ignoring case
        ("condition=Ready=true", True),
        ("condition=Ready=False", False),
        ("condition=Initialized", False),  # no status: not True
        ("condition=Scheduled", False),
        ("jsonpath={.status.phase}=Running", True),
        ("jsonpath=.status.phase=Running", True),  # braces optional, as kubectl relaxes them
        ("jsonpath={.status.phase}=Pending", False),
        ("jsonpath={.metadata.labels.app}", True),  # no value: the path finds something
        ("jsonpath={.status.nodeName}", False),
        ("jsonpath={.status.containerStatuses[0].restartCount}=2", True),
        ("jsonpath={.status.containerStatuses[*].restartCount}=2", False),  # two values
        ("jsonpath={.status.conditions[0]}=x", False),  # a map is never equal to a value
        ('jsonpath={.status.conditions[?(@.type=="Ready")].status}=True', True),
    ],
)
def test_conditions_judge_an_object(text: str, met: bool) -> None:
    condition = parse_condition(text)
    assert not condition.delete
    assert condition.met(POD) is met


def test_delete_is_met_by_absence_only() -> None:
    condition = parse_condition("delete")
    assert condition.delete and not condition.met(POD)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("ready", "unrecognized condition: 'ready'"),
        ("condition=", "unrecognized condition"),
        ("condition=Ready=", "no condition type or no value"),
        ("jsonpath={.status.phase}=", "has to have a value after equal sign"),
        ("jsonpath={.status.phase", "unclosed brace"),
        ("jsonpath={.status.phase}Running", "expected '=' and a value"),
    ],
)
def test_bad_conditions_say_what_is_accepted(text: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_condition(text)
    assert says in str(caught.value)
