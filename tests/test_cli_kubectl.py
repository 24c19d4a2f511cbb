"""kubectl's output templates and verbs in the CLI: ``-o jsonpath``/``custom-columns``,
``get a,b``, ``delete -l|--all``, ``create configmap|secret generic --from-file``,
``logs -l`` refusals and ``completion``, against a real local API server.

As in test_cli_workloads.py, the real ``ApiServer`` runs on 127.0.0.1:0 in a thread of its
own over the in-memory backend (the agent's real object service) holding that module's seed:
two nodes, a Deployment ``web`` with its ReplicaSets and three pods, two Jobs, a DaemonSet,
events and the ConfigMap ``greeting``. Completion is driven as bash drives it: a separate
``python -m p2pkube`` process with ``COMP_WORDS``/``COMP_CWORD`` and
``_P2PKUBE_COMPLETE=bash_complete``, asking the server over HTTP.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from p2pkube.cli.create import MAX_OBJECT_BYTES
from p2pkube.cli.jsonpath import JsonPathError, Template, go_text
from p2pkube.cli.main import cli
from tests.memorybackend import MemoryBackend, serving
from tests.test_cli_workloads import rows, seed

REPO = Path(__file__).resolve().parent.parent
PODS = ["web-58b4f7c9d2-bxk2q", "web-58b4f7c9d2-tz9wm", "web-58b4f7c9d2-zzzzz"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """The data dir of a real ApiServer over the in-memory backend holding ``seed()``."""
    directory = tmp_path / "data"
    with serving(MemoryBackend("n1"), seed(), directory):
        yield directory


def run(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--data-dir", str(data_dir), *args], catch_exceptions=False)


def ok(data_dir: Path, *args: str) -> str:
    result = run(data_dir, *args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


# --- -o jsonpath ------------------------------------------------------------------------------


def test_jsonpath_on_a_list_and_on_one_named_object(data_dir: Path) -> None:
    # Several objects: the template sees kubectl's List; no newline is added.
    assert ok(data_dir, "get", "pods", "-o", "jsonpath={.items[*].metadata.name}") == " ".join(PODS)
    assert ok(data_dir, "get", "pods", "-o", "jsonpath={.kind}") == "List"
    # One named object: the template sees the object itself.
    assert ok(data_dir, "get", "cm", "greeting", "-o", "jsonpath={.data.hello}") == "world"
    assert ok(data_dir, "get", "deploy/web", "-o", "jsonpath='{.kind} {.spec.replicas}'") == (
        "'Deployment 3'"
    )
    # range/end with quoted literals, a filter, and a map printed as JSON (keys sorted).
    template = '{range .items[*]}{.metadata.name}{"\\t"}{.spec.nodeName}{"\\n"}{end}'
    assert ok(data_dir, "get", "pods", "-o", f"jsonpath={template}").splitlines() == [
        f"{PODS[0]}\tn1",
        f"{PODS[1]}\tn2",
        f"{PODS[2]}\t",
    ]
    running = '{.items[?(@.spec.nodeName=="n2")].metadata.name}'
    assert ok(data_dir, "get", "pods", "-o", f"jsonpath={running}") == PODS[1]
    assert ok(data_dir, "get", "cm", "greeting", "-o", "jsonpath={.data}") == (
        '{"hello":"world","poem":"line one\\nline two"}'
    )
    # A key with dots, escaped as kubectl writes it.
    assert ok(data_dir, "get", "nodes", "n1", "-o",
              "jsonpath={.metadata.labels.p2pkube\\.io/kind}") == "native"  # fmt: skip
    # -o jsonpath-as-json: each action's values as a JSON array.
    as_json = ok(data_dir, "get", "nodes", "-o", "jsonpath-as-json={.items[*].metadata.name}")
    assert json.loads(as_json) == ["n1", "n2"]


def test_jsonpath_missing_keys_and_errors_as_kubectl(data_dir: Path, tmp_path: Path) -> None:
    # kubectl's default --allow-missing-template-keys=true: a missing key prints nothing.
    assert ok(data_dir, "get", "cm", "greeting", "-o", "jsonpath={.data.nope}") == ""
    strict = run(
        data_dir, "get", "cm", "greeting", "-o", "jsonpath={.data.nope}",
        "--allow-missing-template-keys=false",
    )  # fmt: skip
    assert strict.exit_code == 1
    assert strict.stderr.startswith(
        'error: error executing jsonpath "{.data.nope}": Error executing template: '
        "nope is not found."
    )
    # An index past the end is an error either way, as in kubectl.
    past = run(data_dir, "get", "pods", "-o", "jsonpath={.items[7].metadata.name}")
    assert past.exit_code == 1
    assert "array index out of bounds: index 7, length 3" in past.stderr
    # A template that does not parse is a usage error naming -o.
    bad = run(data_dir, "get", "pods", "-o", "jsonpath={range .items[*]}{.metadata.name}")
    assert bad.exit_code == 2
    assert "error parsing jsonpath {range .items[*]}{.metadata.name}, range without end" in (
        bad.stderr
    )
    unknown = run(data_dir, "get", "pods", "-o", "jsonpaht={.kind}")
    assert unknown.exit_code == 2 and "unable to match a printer" in unknown.stderr
    # -o jsonpath-file reads the template from a file.
    template = tmp_path / "names.tmpl"
    template.write_text('{range .items[*]}{.metadata.name}{"\\n"}{end}')
    assert ok(data_dir, "get", "nodes", "-o", f"jsonpath-file={template}") == "n1\nn2\n"


def test_jsonpath_template_layer() -> None:
    """The kubectl layer over jsonpath-ng, on the example of kubectl's JSONPath page."""
    doc = {
        "kind": "List",
        "items": [
            {"metadata": {"name": "127.0.0.1"}, "status": {"capacity": {"cpu": "4"}}},
            {"metadata": {"name": "127.0.0.2"}, "status": {"capacity": {"cpu": "8"}}},
        ],
        "users": [
            {"name": "myself", "user": {}},
            {"name": "e2e", "user": {"username": "admin", "password": "secret"}},
        ],
    }
    cases = {
        "kind is {.kind}": "kind is List",
        "{['kind']}": "List",
        "{$.kind}": "List",
        "{..name}": "127.0.0.1 127.0.0.2 myself e2e",
        "{.users[0].name}": "myself",
        "{.users[-1].name}": "e2e",
        "{.users[0:1].name}": "myself",
        '{.users[?(@.name=="e2e")].user.password}': "secret",
        "{range .items[*]}[{.metadata.name}, {.status.capacity}] {end}": (
            '[127.0.0.1, {"cpu":"4"}] [127.0.0.2, {"cpu":"8"}] '
        ),
        '{"a\\tb"}': "a\tb",
    }
    for template, expected in cases.items():
        assert Template(template).execute(doc) == expected, template
    for bad, message in [
        ("{.kind", "unclosed action"),
        ("{end}", "not in range"),
        ("{metadata.name}", "unrecognized identifier metadata"),
    ]:
        with pytest.raises(JsonPathError, match=message):
            Template(bad)
    # Go's %v, as custom-columns prints values.
    assert go_text({"b": [1, 2.5], "a": None, "c": True}) == "map[a:<nil> b:[1 2.5] c:true]"
    assert Template("{.n}").execute({"n": 1e6}) == "1e+06"  # Go's float formatting


# --- -o custom-columns ------------------------------------------------------------------------


def test_custom_columns_with_none_and_from_a_file(data_dir: Path, tmp_path: Path) -> None:
    spec = "NAME:.metadata.name,NODE:.spec.nodeName,APP:{.metadata.labels.app},IMAGES:.spec.containers[*].name"  # noqa: E501
    assert rows(ok(data_dir, "get", "pods", "-o", f"custom-columns={spec}")) == [
        ["NAME", "NODE", "APP", "IMAGES"],
        [PODS[0], "n1", "web", "main"],
        [PODS[1], "n2", "web", "main"],
        [PODS[2], "<none>", "web", "main"],
    ]
    # A map is printed as Go prints it; across namespaces no NAMESPACE column is added.
    out = ok(data_dir, "get", "cm", "-A", "-o", "custom-columns=NS:metadata.namespace,DATA:.data")
    assert out == ("NS        DATA\ndefault   map[hello:world poem:line one\nline two]\n")
    # Nothing matched: kubectl prints the header alone (and no "No resources found").
    empty = run(data_dir, "get", "svc", "-o", "custom-columns=NAME:.metadata.name")
    assert (empty.exit_code, empty.stdout, empty.stderr) == (0, "NAME\n", "")
    columns = tmp_path / "columns.txt"
    columns.write_text("NAME   READY\n.metadata.name   .status.readyReplicas\n")
    assert rows(ok(data_dir, "get", "deploy", "-o", f"custom-columns-file={columns}")) == [
        ["NAME", "READY"],
        ["web", "2"],
    ]
    bad = run(data_dir, "get", "pods", "-o", "custom-columns=NAME")
    assert bad.exit_code == 2
    assert "unexpected custom-columns spec: NAME, expected <header>:<json-path-expr>" in bad.stderr


def test_watch_with_a_template_or_custom_columns(data_dir: Path) -> None:
    """get -w applies a jsonpath template to each object, and custom columns as its table."""
    names = ok(data_dir, "get", "pods", "-w", "--request-timeout", "1s", "-o",
               'jsonpath={.metadata.name}{"\\n"}')  # fmt: skip
    assert names.splitlines() == PODS
    table = ok(data_dir, "get", "deploy", "-w", "--request-timeout", "1s", "-o",
               "custom-columns=NAME:.metadata.name,WANTED:.spec.replicas")  # fmt: skip
    assert rows(table) == [["NAME", "WANTED"], ["web", "3"]]


# --- get a,b ----------------------------------------------------------------------------------


def test_get_several_kinds(data_dir: Path) -> None:
    out = ok(data_dir, "get", "deploy,rs,cm")
    tables = out.rstrip("\n").split("\n\n")
    assert len(tables) == 3, out
    assert rows(tables[0])[0][:2] == ["NAME", "READY"]
    assert rows(tables[0])[1][0] == "deployment/web"
    assert [r[0] for r in rows(tables[1])[1:]] == [
        "replicaset/web-58b4f7c9d2",
        "replicaset/web-6f7d9c8b5a",
    ]
    assert rows(tables[2])[1][:2] == ["configmap/greeting", "2"]
    wide = ok(data_dir, "get", "pods,deploy", "-o", "wide").split("\n\n")
    assert rows(wide[0])[0][-1] == "LABELS" and rows(wide[1])[0][-1] == "SELECTOR"
    # A kind without objects prints no table; -o name and -o json see them all.
    assert ok(data_dir, "get", "svc,deploy,cm", "-o", "name").split() == [
        "deployment/web",
        "configmap/greeting",
    ]
    listed = json.loads(ok(data_dir, "get", "pods,jobs", "-o", "json"))
    assert listed["kind"] == "List"
    assert [i["kind"] for i in listed["items"]] == ["Pod"] * 3 + ["Job"] * 2
    jsonpath = "jsonpath={range .items[*]}{.kind}/{.metadata.name} {end}"
    assert ok(data_dir, "get", "deploy,ds", "-o", jsonpath) == "Deployment/web DaemonSet/agent "
    # Nothing of any kind.
    none = run(data_dir, "get", "svc,ep")
    assert (none.exit_code, none.stdout) == (0, "")
    assert none.stderr == "No resources found in default namespace.\n"
    # Refusals.
    assert run(data_dir, "get", "pods,nosuch").exit_code == 1
    assert run(data_dir, "get", "pods,deploy", "-w").exit_code == 2


# --- delete -l / --all ------------------------------------------------------------------------


def test_delete_by_selector_and_all(data_dir: Path) -> None:
    out = ok(data_dir, "delete", "pods", "-l", "app=web", "--force")
    assert out.splitlines() == [f'pod "{name}" deleted' for name in PODS]
    assert run(data_dir, "get", "pods").stderr == "No resources found in default namespace.\n"
    none = run(data_dir, "delete", "pods", "-l", "app=web")
    assert (none.exit_code, none.stdout) == (0, "")
    assert none.stderr == "No resources found in default namespace.\n"
    # --all in another namespace finds nothing; -A finds them.
    other = run(data_dir, "delete", "jobs", "--all", "-n", "other")
    assert other.stderr == "No resources found in other namespace.\n"
    assert ok(data_dir, "delete", "jobs,cm", "--all", "-A").splitlines() == [
        'job "crunch" deleted',
        'job "pi" deleted',
        'configmap "greeting" deleted',
    ]
    for args, message in [
        (("delete", "-l", "app=web"), "give the RESOURCE"),
        (("delete", "pods", "x", "-l", "app=web"), "names cannot be given"),
        (("delete", "pods", "--all", "-l", "a=b"), "cannot set --all and -l/--selector"),
        (("delete", "pods", "x", "-A"), "-A/--all-namespaces goes with"),
    ]:
        refused = run(data_dir, *args)
        assert refused.exit_code == 2 and message in refused.stderr, (args, refused.stderr)
    events = run(data_dir, "delete", "events", "--all")
    assert events.exit_code == 1 and "events cannot be deleted" in events.stderr


# --- create configmap / secret generic --------------------------------------------------------


def test_create_configmap_from_files_and_a_directory(data_dir: Path, tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    (conf / "nested").mkdir(parents=True)
    (conf / "app.properties").write_text("color=blue\n")
    (conf / "ui.json").write_text('{"dark": true}')
    (conf / "nested" / "skipped").write_text("not a regular file of conf")
    script = tmp_path / "main.py"
    script.write_text("print('hi')\n")
    out = ok(data_dir, "create", "configmap", "app", f"--from-file={conf}",
             f"--from-file=run.py={script}", "--from-literal", "mode=fast")  # fmt: skip
    assert out == "configmap/app created\n"
    stored = json.loads(ok(data_dir, "get", "cm", "app", "-o", "json"))
    assert stored["data"] == {
        "mode": "fast",
        "app.properties": "color=blue\n",
        "ui.json": '{"dark": true}',
        "run.py": "print('hi')\n",
    }
    # --dry-run=client prints without creating.
    dry = ok(data_dir, "create", "configmap", "draft", "--from-literal=a=1", "--dry-run=client",
             "-o", "yaml")  # fmt: skip
    assert yaml.safe_load(dry) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "draft", "namespace": "default"},
        "data": {"a": "1"},
    }
    assert run(data_dir, "get", "cm", "draft").exit_code == 1
    assert ok(data_dir, "create", "configmap", "draft", "--from-literal=a=1", "--dry-run") == (
        "configmap/draft created (dry run)\n"
    )
    assert ok(data_dir, "create", "configmap", "named", "-o", "jsonpath={.metadata.uid}")


def test_create_refuses_bad_keys_duplicates_binary_and_oversized(
    data_dir: Path, tmp_path: Path
) -> None:
    text = tmp_path / "a.txt"
    text.write_text("x")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00")
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * (MAX_OBJECT_BYTES + 1))
    bad_name = tmp_path / "bad name"
    bad_name.write_text("x")
    cases = [
        (["--from-literal=a=1", "--from-literal=a=2"], 2,
         "cannot add key 'a', another key by that name already exists"),
        ([f"--from-file={text}", f"--from-file=a.txt={text}"], 2, "cannot add key 'a.txt'"),
        (["--from-literal=a b=1"], 2, "'a b' is not a valid key name"),
        ([f"--from-file={bad_name}"], 2, "'bad name' is not a valid key name"),
        (["--from-literal=novalue"], 2, "'novalue' is not KEY=VALUE"),
        ([f"--from-file=k={tmp_path}"], 2, "a key cannot be given for a directory"),
        ([f"--from-file={tmp_path / 'nope'}"], 2, "no such file or directory"),
        ([f"--from-file={binary}"], 1, "not UTF-8 text"),
        ([f"--from-file={big}"], 1, f"is {MAX_OBJECT_BYTES + 1:,} bytes, over the 1,048,576"),
        (["--dry-run=server"], 2, "no server-side dry run"),
    ]  # fmt: skip
    for args, code, message in cases:
        result = run(data_dir, "create", "configmap", "c", *args)
        assert result.exit_code == code and message in result.stderr, (args, result.stderr)
    assert run(data_dir, "get", "cm", "c").exit_code == 1  # nothing was created
    # Together over the cap, though each file is under it.
    half = tmp_path / "half"
    half.write_bytes(b"y" * (MAX_OBJECT_BYTES // 2 + 10))
    both = run(data_dir, "create", "secret", "generic", "s", f"--from-file=one={half}",
               f"--from-file=two={half}")  # fmt: skip
    assert both.exit_code == 1 and "over the 1,048,576 bytes (1 MiB)" in both.stderr


def test_create_secret_generic_dry_run(data_dir: Path, tmp_path: Path) -> None:
    key = tmp_path / "tls.key"
    key.write_bytes(b"\x00\x01binary\xff")
    out = ok(data_dir, "create", "secret", "generic", "creds", "-n", "prod",
             "--from-literal=username=admin", f"--from-file={key}", "--dry-run=client",
             "-o", "yaml")  # fmt: skip
    assert yaml.safe_load(out) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "prod"},
        "type": "Opaque",
        "data": {
            "username": base64.b64encode(b"admin").decode(),
            "tls.key": base64.b64encode(b"\x00\x01binary\xff").decode(),
        },
    }


def test_create_namespace(data_dir: Path) -> None:
    assert ok(data_dir, "create", "namespace", "team-1") == "namespace/team-1 created\n"
    assert ok(data_dir, "create", "configmap", "c", "-n", "team-1") == "configmap/c created\n"
    assert ok(data_dir, "get", "ns", "-o", "jsonpath={.items[*].metadata.name}").split() == [
        "default",
        "team-1",
    ]
    dry = json.loads(ok(data_dir, "create", "namespace", "x", "--dry-run", "-o", "json"))
    assert dry == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}
    assert run(data_dir, "get", "namespace", "x").exit_code == 1
    assert run(data_dir, "create", "namespace", "Team_1").exit_code == 2


# --- logs -l (what needs no pod to run; tests/test_cli_kubectl_cluster.py reads real logs) -----


def test_logs_selector_refusals_and_failures(data_dir: Path) -> None:
    many = run(data_dir, "logs", "-l", "app=web", "-f", "--max-log-requests", "2")
    assert many.exit_code == 1
    assert many.stderr == (
        "error: you are attempting to follow 3 log streams, but maximum allowed concurrency "
        "is 2, use --max-log-requests to increase the limit\n"
    )
    # The in-memory agent runs no pod: each pod's failure is reported, none hides the others.
    failed = run(data_dir, "logs", "-l", "app=web")
    assert failed.exit_code == 1
    assert [line.rsplit("(", 1)[1] for line in failed.stderr.splitlines()] == [
        f"pod/{pod} container main)" for pod in PODS
    ]
    none = run(data_dir, "logs", "-l", "app=nothing")
    assert (none.exit_code, none.stderr) == (0, "No resources found in default namespace.\n")
    assert run(data_dir, "logs").exit_code == 2
    assert run(data_dir, "logs", "x", "-l", "app=web").exit_code == 2


# --- completion ---------------------------------------------------------------------------------


def complete(data_dir: Path | None, *words: str) -> list[str]:
    """What bash gets for the last word of ``p2pkube WORDS...`` (click's bash protocol:
    ``type,value`` lines), asked of a separate process as the shell asks it."""
    line = ["p2pkube", *(["--data-dir", str(data_dir)] if data_dir else []), *words]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "COMP_WORDS": " ".join(line),
        "COMP_CWORD": str(len(line) - 1),
        "_P2PKUBE_COMPLETE": "bash_complete",
    }
    result = subprocess.run(
        [sys.executable, "-m", "p2pkube"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line]


def test_completion_of_kinds_and_names_from_the_agent(data_dir: Path, tmp_path: Path) -> None:
    assert complete(data_dir, "get", "dep") == ["deployments", "deployment", "deploy"]
    assert complete(data_dir, "get", "deploy,sv") == ["deploy,svc"]
    assert complete(data_dir, "get", "pods", "") == PODS
    assert complete(data_dir, "get", "pods", "web-58b4f7c9d2-t") == [PODS[1]]
    assert complete(data_dir, "get", "deploy/") == ["deploy/web"]
    assert complete(data_dir, "get", "nodes", "") == ["n1", "n2"]
    assert complete(None, "get", "cm", "--data-dir", str(data_dir), "") == ["greeting"]
    assert complete(data_dir, "get", "cm", "-n", "other", "") == []
    assert complete(data_dir, "delete", "pods", PODS[0], "") == PODS[1:]
    assert complete(data_dir, "logs", "web-58b4f7c9d2-z") == [PODS[2]]
    assert complete(data_dir, "describe", "cm", "") == ["greeting"]
    assert complete(data_dir, "wait", "po") == ["pods", "pod", "po"]
    assert complete(data_dir, "wait", "pods", PODS[0], "") == PODS[1:]
    assert complete(data_dir, "wait", "--for", "delete", "deploy/") == ["deploy/web"]
    assert complete(data_dir, "wait", "deploy/web", "cm/g") == ["cm/greeting"]
    assert "completion" in complete(data_dir, "comp")
    # No agent there: nothing, silently.
    assert complete(tmp_path / "no-agent", "get", "pods", "") == []


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_the_shell_script(shell: str) -> None:
    result = CliRunner().invoke(cli, ["completion", shell], catch_exceptions=False)
    assert result.exit_code == 0
    assert "_P2PKUBE_COMPLETE" in result.stdout and f"{shell}_complete" in result.stdout
    if shell == "bash":
        checked = subprocess.run(["bash", "-n"], input=result.stdout, text=True)
        assert checked.returncode == 0
    assert CliRunner().invoke(cli, ["completion", "tcsh"]).exit_code == 2
