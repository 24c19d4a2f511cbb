"""``get cronjobs``, ``describe cronjob`` and ``create job --from=cronjob/NAME`` against a real
local API server over the in-memory backend (as tests/test_cli_workloads.py does)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from p2pkube.model.schema import validate_object
from tests.memorybackend import MemoryBackend, blob, serving
from tests.test_cli_workloads import (  # frozen_clock: ages against NOW here too (autouse)
    IMAGE,
    Agent,
    frozen_clock,  # noqa: F401
    lines_of,
    ok,
    rows,
    run,
    ts,
)


def cronjob(
    name: str, ago: timedelta, status: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    obj = validate_object(
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": name},
            "spec": {
                "jobTemplate": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "template": {
                            "spec": {
                                "restartPolicy": "OnFailure",
                                "containers": [{"name": "hello", "image": IMAGE}],
                            }
                        }
                    },
                },
                **spec,
            },
        }
    )
    obj["metadata"].update(
        namespace="default", uid=f"uid-{name}", creationTimestamp=ts(ago), generation=1
    )
    return {**obj, **({"status": status} if status else {})}


def seed() -> list[dict[str, Any]]:
    hello = cronjob(
        "hello",
        timedelta(minutes=30),
        {
            "lastScheduleTime": ts(timedelta(seconds=45)),
            "active": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": "hello-29944037",
                    "namespace": "default",
                    "uid": "uid-hello-29944037",
                }
            ],
        },
        schedule="*/1 * * * *",
        successfulJobsHistoryLimit=5,
    )
    nightly = cronjob(
        "nightly",
        timedelta(days=2),
        schedule="0 3 * * *",
        timeZone="Europe/Berlin",
        suspend=True,
        concurrencyPolicy="Forbid",
        startingDeadlineSeconds=120,
    )
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "hello.1", "namespace": "default", "creationTimestamp": ts()},
        "involvedObject": {
            "kind": "CronJob",
            "namespace": "default",
            "name": "hello",
            "uid": "uid-hello",
        },
        "reason": "SuccessfulCreate",
        "message": "Created job hello-29944037",
        "type": "Normal",
        "source": {"component": "scheduler", "host": "n1"},
        "firstTimestamp": ts(timedelta(seconds=45)),
        "lastTimestamp": ts(timedelta(seconds=45)),
        "count": 1,
    }
    return [blob(IMAGE), hello, nightly, event]


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    backend = MemoryBackend("n1")
    data_dir = tmp_path / "data"
    with serving(backend, seed(), data_dir) as (server, loop):
        yield Agent(server, backend, data_dir, loop)


def test_get_cronjobs_has_kubectls_columns_and_names(agent: Agent) -> None:
    table = rows(ok(agent, "get", "cronjobs"))
    assert table == [
        ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"],
        ["hello", "*/1 * * * *", "<none>", "False", "1", "45s", "30m"],
        ["nightly", "0 3 * * *", "Europe/Berlin", "True", "0", "<none>", "2d"],
    ]
    same = ok(agent, "get", "cronjobs")
    for alias in ("cronjob", "cj", "cronjobs.batch"):
        assert ok(agent, "get", alias) == same
    wide = rows(ok(agent, "get", "cj", "hello", "-o", "wide"))
    assert wide[0][-3:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    assert wide[1][-3:] == ["hello", "sha256:abababababab", "<none>"]
    assert ok(agent, "get", "cj", "-o", "name") == "cronjob/hello\ncronjob/nightly\n"


def test_describe_cronjob(agent: Agent) -> None:
    lines = lines_of(ok(agent, "describe", "cronjob", "hello"))
    for expected in (
        "Name:                          hello",
        "Schedule:                      */1 * * * *",
        "Concurrency Policy:            Allow",
        "Suspend:                       False",
        "Successful Job History Limit:  5",
        "Failed Job History Limit:      1",
        "Starting Deadline Seconds:     <unset>",
        "Selector:                      <unset>",
        "Parallelism:                   1",
        "Completions:                   1",
        "Pod Template:",
        "   hello:",
        "Active Jobs:         hello-29944037",  # aligned anew after the template, as kubectl
    ):
        assert expected in lines, (expected, lines)
    assert any(line.startswith("Last Schedule Time:  ") for line in lines)
    assert rows(lines[-1])[0][:2] == ["Normal", "SuccessfulCreate"]
    nightly = lines_of(ok(agent, "describe", "cj", "nightly"))
    for expected in (
        "Time Zone:                     Europe/Berlin",
        "Concurrency Policy:            Forbid",
        "Suspend:                       True",
        "Starting Deadline Seconds:     120s",
        "Last Schedule Time:  <unset>",
        "Active Jobs:         <none>",
    ):
        assert expected in nightly, (expected, nightly)


def test_create_job_from_a_cronjob_runs_its_template_now(agent: Agent) -> None:
    assert ok(agent, "create", "job", "by-hand", "--from=cronjob/hello") == "job/by-hand created\n"
    job = agent.get("Job", "by-hand")
    hello = agent.get("CronJob", "hello")
    assert job["metadata"]["annotations"] == {"cronjob.kubernetes.io/instantiate": "manual"}
    assert job["metadata"]["labels"] == {"app": "hello"}
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "name": "hello",
            "uid": "uid-hello",
            "controller": True,
        }
    ]
    assert job["spec"] == hello["spec"]["jobTemplate"]["spec"]
    missing = run(agent, "create", "job", "x", "--from=cronjob/nope")
    assert missing.exit_code == 1 and 'cronjobs "nope" not found' in missing.stderr
    wrong = run(agent, "create", "job", "x", "--from=deployment/web")
    assert wrong.exit_code == 1
    assert "from must be an existing cronjob: cronjob/NAME" in wrong.stderr
    again = run(agent, "create", "job", "by-hand", "--from=cj/hello")
    assert again.exit_code == 1 and "already exists" in again.stderr
