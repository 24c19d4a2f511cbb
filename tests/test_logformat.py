"""``--log-format json`` of ``p2pkube join`` and ``p2pkube signal``: a real signaling server and
a real agent (separate processes) write nothing but one JSON object per line on stderr."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from p2pkube.api.client import ApiClient
from p2pkube.devcluster import free_port, wait_until
from p2pkube.logformat import JsonFormatter, configure_logging
from p2pkube.net.jointoken import generate_token

KEYS = {"time", "level", "logger", "message"}


def records(text: str) -> list[dict[str, object]]:
    """Every line of ``text`` as JSON, each with the keys every record has."""
    parsed = []
    for line in text.splitlines():
        record = json.loads(line)  # fails the test on any line that is not JSON
        assert isinstance(record, dict) and KEYS <= set(record), line
        assert str(record["time"]).endswith("Z"), record
        datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00"))
        parsed.append(record)
    return parsed


@pytest.mark.slow  # a real agent and signaling server
def test_an_agent_and_a_signaling_server_log_json_lines(tmp_path: Path) -> None:
    port = free_port()
    token = generate_token()
    env = {**os.environ, "P2PKUBE_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    signal_err = (tmp_path / "signal.err").open("w+")
    server = subprocess.Popen(
        [sys.executable, "-m", "p2pkube", "signal", "--port", str(port), "--log-format", "json"],
        stdout=subprocess.DEVNULL,
        stderr=signal_err,
        env=env,
    )
    agent_err = (tmp_path / "agent.err").open("w+")
    data_dir = tmp_path / "j1"
    join = ["join", f"ws://127.0.0.1:{port}", "--name", "j1", "--data-dir", str(data_dir)]
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "p2pkube",
            *join,
            "--ice-address",
            "127.0.0.1",
            "--log-format",
            "json",
            "--token",
            token,
        ],
        stdout=subprocess.DEVNULL,
        stderr=agent_err,
        env=env,
    )
    try:
        wait_until(lambda: ApiClient.from_data_dir(data_dir).status(), 30, what="the agent's API")
        wait_until(
            lambda: "joined cluster" in (tmp_path / "agent.err").read_text(), 10, what="banner"
        )
    finally:
        for process in (agent, server):
            process.send_signal(signal.SIGTERM)
        for process in (agent, server):
            process.wait(20)
    agent_records = records((tmp_path / "agent.err").read_text())
    server_records = records((tmp_path / "signal.err").read_text())
    messages = [str(r["message"]) for r in agent_records]
    # The banner, the --token warning and the agent's own records are all JSON.
    assert any(m.startswith("node j1 (") and " joined cluster " in m for m in messages), messages
    assert any("--token on the command line is visible" in m for m in messages), messages
    assert {"p2pkube.agent", "p2pkube.cli"} <= {r["logger"] for r in agent_records}
    assert any(r["message"] == "leaving the cluster" for r in agent_records)
    assert server_records and {r["level"] for r in server_records} <= {"INFO", "WARNING"}
    assert any(str(r["logger"]).startswith("signaling") for r in server_records), server_records


def test_a_json_record_carries_its_exception() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        root.handlers[:] = []  # as in a fresh process (pytest has its own handlers on root)
        configure_logging("info", "json", stream)
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            logging.getLogger("p2pkube.test").exception("it broke: %s", "here")
        logging.getLogger("p2pkube.test").debug("not at info")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.captureWarnings(False)
    (record,) = records(stream.getvalue())
    assert record["level"] == "ERROR" and record["logger"] == "p2pkube.test"
    assert record["message"] == "it broke: here"
    assert "ValueError: bad\nthing" in str(record["exception"])
    assert stream.getvalue().count("\n") == 1  # one line, newlines escaped
    assert JsonFormatter().format(logging.makeLogRecord({"msg": "x"}))  # no exc: no key
    assert "exception" not in json.loads(JsonFormatter().format(logging.makeLogRecord({})))
