"""The real kubectl (the machine image's, /usr/bin/kubectl) against an agent's Kubernetes API.

kubectl runs unchanged, with only the kubeconfig ``p2pkube kubeconfig`` prints, against the
real ``ApiServer`` over the in-memory backend (the agent's object service and watch hub; no
controllers, no kubelet) holding test_cli_workloads' seed: nodes n1 and n2, the Deployment
``web`` (revision 2, three pods), its ReplicaSets, Jobs, a DaemonSet, events, the ConfigMap
``greeting``. What needs running pods (logs, drain, port-forward, a rollout that finishes) is
in test_kubectl_cluster.py, against real agents.

kubectl keeps its discovery and OpenAPI caches under a per-test ``--cache-dir``, so every
test sees this server's documents, never another's.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from p2pkube.api.server import ApiServer
from p2pkube.cli.main import cli
from p2pkube.devcluster import wait_until
from tests.kubectl import Kubectl
from tests.memorybackend import MemoryBackend, serving
from tests.test_cli_workloads import IMAGE, seed

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"

pytestmark = pytest.mark.skipif(
    not Path(KUBECTL).exists(),
    reason="kubectl is not installed (apt-get install kubernetes-client)",
)


class Agent(Kubectl):
    """kubectl for the served agent, whose data dir the p2pkube CLI uses too."""

    def __init__(self, tmp: Path, data_dir: Path, server: ApiServer) -> None:
        result = CliRunner().invoke(cli, ["kubeconfig", "--data-dir", str(data_dir)])
        assert result.exit_code == 0, result.output
        (tmp / "kubeconfig").write_text(result.stdout)
        super().__init__(tmp / "kubeconfig")
        self.data_dir = data_dir
        self.server = server

    def watching(self) -> bool:
        """Whether a client is watching (kubectl wait and get -w are, once they listed)."""
        return self.server.open_watches() > 0


@pytest.fixture
def kubectl(tmp_path: Path) -> Iterator[Agent]:
    data_dir = tmp_path / "data"
    with serving(MemoryBackend("n1"), seed(), data_dir) as (server, _):
        yield Agent(tmp_path, data_dir, server)


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


# --- reading -------------------------------------------------------------------------------


def test_get_prints_the_same_tables_as_p2pkube(kubectl: Agent) -> None:
    nodes = rows(kubectl.ok("get", "nodes"))
    assert nodes[0][0] == "NAME" and "STATUS" in nodes[0]
    assert [r[0] for r in nodes[1:]] == ["n1", "n2"]
    pods = rows(kubectl.ok("get", "pods"))
    assert pods[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert len(pods) == 4
    wide = rows(kubectl.ok("get", "pods", "-o", "wide"))
    assert "NODE" in wide[0]
    # The CLI's own table, for comparison: the same rows.
    own = CliRunner().invoke(cli, ["--data-dir", str(kubectl.data_dir), "get", "pods"])
    assert [r[:3] for r in rows(own.stdout)] == [r[:3] for r in pods]
    assert kubectl.ok("get", "deploy", "web", "-o", "jsonpath={.spec.replicas}") == "3"
    shown = yaml.safe_load(kubectl.ok("get", "cm", "greeting", "-o", "yaml"))
    assert shown["data"]["hello"] == "world" and shown["metadata"]["resourceVersion"]
    labelled = rows(kubectl.ok("get", "pods", "-l", "app=web", "--show-labels"))
    assert "LABELS" in labelled[0] and len(labelled) == 4
    on_n2 = rows(kubectl.ok("get", "pods", "--field-selector", "spec.nodeName=n2", "-o", "name"))
    assert len(on_n2) == 1
    everywhere = rows(kubectl.ok("get", "pods", "-A"))
    assert everywhere[0][0] == "NAMESPACE" and len(everywhere) == 4
    both = kubectl.ok("get", "deploy,rs", "-o", "name").split()
    assert "deployment.apps/web" in both and any(n.startswith("replicaset.apps/") for n in both)


def test_describe_shows_the_objects_events(kubectl: Agent) -> None:
    text = kubectl.ok("describe", "deployment", "web")
    assert "Name:" in text and "web" in text
    assert "Events:" in text
    events = text.split("Events:", 1)[1]
    assert "<none>" not in events.splitlines()[0]


def test_get_watch_prints_a_row_per_change(kubectl: Agent) -> None:
    process = subprocess.Popen(
        kubectl.argv("get", "cm", "-w", "--output-watch-events"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.split()[0] == "EVENT"
        assert process.stdout.readline().split()[:2] == ["ADDED", "greeting"]
        kubectl.ok("apply", "-f", "-", stdin=manifest({"a": "1"}))
        assert process.stdout.readline().split()[:2] == ["ADDED", "settings"]
        kubectl.ok("delete", "configmap", "settings")
        assert process.stdout.readline().split()[:2] == ["DELETED", "settings"]
    finally:
        process.kill()
        process.communicate(timeout=10)


# --- writing -------------------------------------------------------------------------------


def manifest(data: dict[str, str], name: str = "settings") -> str:
    """A ConfigMap manifest, as a user's file would hold it."""
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": data,
        }
    )


def test_apply_client_side_keeps_the_last_applied_configuration(kubectl: Agent) -> None:
    assert "configmap/settings created" in kubectl.ok(
        "apply", "-f", "-", stdin=manifest({"a": "1", "b": "2"})
    )
    first = kubectl.json("get", "cm", "settings")
    applied = json.loads(
        first["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    )
    assert applied["data"] == {"a": "1", "b": "2"}
    # Someone else adds a key; apply drops b (it left the manifest) but keeps theirs.
    kubectl.ok("patch", "cm", "settings", "--type", "merge", "-p", '{"data":{"mine":"x"}}')
    assert "configmap/settings configured" in kubectl.ok(
        "apply", "-f", "-", stdin=manifest({"a": "9"})
    )
    assert kubectl.json("get", "cm", "settings")["data"] == {"a": "9", "mine": "x"}
    assert "unchanged" in kubectl.ok("apply", "-f", "-", stdin=manifest({"a": "9"}))


def test_apply_server_side(kubectl: Agent) -> None:
    out = kubectl.ok("apply", "--server-side", "-f", "-", stdin=manifest({"a": "1"}))
    assert "serverside-applied" in out
    out = kubectl.ok("apply", "--server-side", "-f", "-", stdin=manifest({"a": "2", "c": "3"}))
    assert kubectl.json("get", "cm", "settings")["data"] == {"a": "2", "c": "3"}


def test_create_replace_delete_and_dry_run(kubectl: Agent, tmp_path: Path) -> None:
    assert "created" in kubectl.ok("create", "configmap", "one", "--from-literal=k=v")
    already = kubectl.run("create", "configmap", "one", "--from-literal=k=v")
    assert already.returncode == 1
    assert 'configmaps "one" already exists' in already.stderr
    shown = kubectl.json("get", "cm", "one")
    shown["data"]["k"] = "w"
    path = tmp_path / "one.json"
    path.write_text(json.dumps(shown))
    assert "replaced" in kubectl.ok("replace", "-f", str(path))
    stale = kubectl.run("replace", "-f", str(path))  # its resourceVersion is now old
    assert stale.returncode == 1 and "Error from server (Conflict)" in stale.stderr
    assert "(server dry run)" in kubectl.ok(
        "create", "configmap", "two", "--from-literal=k=v", "--dry-run=server"
    )
    assert kubectl.run("get", "cm", "two").returncode == 1
    kubectl.ok("create", "configmap", "three", "--from-literal=k=v")
    kubectl.ok("label", "cm", "three", "gone=yes")
    kubectl.ok("label", "cm", "one", "gone=yes")
    out = kubectl.ok("delete", "cm", "-l", "gone=yes", "--cascade=foreground")
    assert 'configmap "one" deleted' in out and 'configmap "three" deleted' in out
    assert kubectl.run("get", "cm", "one").returncode == 1
    orphaning = kubectl.run("delete", "deploy", "web", "--cascade=orphan")
    assert orphaning.returncode == 1 and "Orphan is not supported" in orphaning.stderr
    assert kubectl.json("get", "deploy", "web")["metadata"]["name"] == "web"
    invalid = kubectl.run("create", "configmap", "Bad_Name")
    assert invalid.returncode == 1 and "is invalid" in invalid.stderr


def test_patch_in_three_types_label_and_annotate(kubectl: Agent) -> None:
    kubectl.ok(
        "patch",
        "deploy",
        "web",
        "-p",
        '{"spec":{"template":{"spec":{"containers":[{"name":"main","args":["7"]}]}}}}',
    )
    web = kubectl.json("get", "deploy", "web")
    (container,) = web["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["7"] and container["image"] == IMAGE  # merged by name
    kubectl.ok("patch", "cm", "greeting", "--type", "merge", "-p", '{"data":{"hello":null}}')
    assert "hello" not in kubectl.json("get", "cm", "greeting")["data"]
    kubectl.ok(
        "patch",
        "cm",
        "greeting",
        "--type",
        "json",
        "-p",
        '[{"op":"add","path":"/data/added","value":"yes"}]',
    )
    assert kubectl.json("get", "cm", "greeting")["data"]["added"] == "yes"
    failed = kubectl.run(
        "patch",
        "cm",
        "greeting",
        "--type",
        "json",
        "-p",
        '[{"op":"test","path":"/data/added","value":"no"}]',
    )
    assert failed.returncode == 1
    assert "The request is invalid: the JSON patch does not apply" in failed.stderr
    kubectl.ok("label", "deploy", "web", "tier=front")
    kubectl.ok("annotate", "deploy", "web", "owner=team-a")
    meta = kubectl.json("get", "deploy", "web")["metadata"]
    assert meta["labels"]["tier"] == "front" and meta["annotations"]["owner"] == "team-a"
    kubectl.ok("label", "deploy", "web", "tier-")
    assert "tier" not in kubectl.json("get", "deploy", "web")["metadata"]["labels"]


def test_edit_saves_through_a_patch(kubectl: Agent, tmp_path: Path) -> None:
    editor = tmp_path / "editor.py"
    editor.write_text(
        textwrap.dedent(
            f"""\
            #!{sys.executable}
            import sys, pathlib
            path = pathlib.Path(sys.argv[-1])
            path.write_text(path.read_text().replace("hello: world", "hello: edited"))
            """
        )
    )
    editor.chmod(editor.stat().st_mode | stat.S_IEXEC)
    out = kubectl.ok("edit", "cm", "greeting", env={"KUBE_EDITOR": str(editor)})
    assert "configmap/greeting edited" in out
    assert kubectl.json("get", "cm", "greeting")["data"]["hello"] == "edited"


def test_scale_and_the_rollout_verbs(kubectl: Agent) -> None:
    assert "scaled" in kubectl.ok("scale", "deploy", "web", "--replicas=5")
    assert kubectl.json("get", "deploy", "web")["spec"]["replicas"] == 5
    history = kubectl.ok("rollout", "history", "deploy/web")
    assert "REVISION" in history and "first version" in history
    restarted = kubectl.ok("rollout", "restart", "deploy/web")
    assert "restarted" in restarted
    template = kubectl.json("get", "deploy", "web")["spec"]["template"]
    assert "kubectl.kubernetes.io/restartedAt" in template["metadata"]["annotations"]
    undone = kubectl.ok("rollout", "undo", "deploy/web", "--to-revision=1")
    assert "rolled back" in undone


def test_wait_for_a_condition_a_jsonpath_and_a_deletion(kubectl: Agent) -> None:
    out = kubectl.ok("wait", "--for=condition=Available", "deploy/web", "--timeout=10s")
    assert "condition met" in out
    out = kubectl.ok("wait", "--for=jsonpath={.spec.replicas}=3", "deploy/web", "--timeout=10s")
    assert "condition met" in out
    kubectl.ok("apply", "-f", "-", stdin=manifest({"k": "v"}, name="short"))
    # The watches of the waits above end once the server sees their clients gone.
    wait_until(lambda: not kubectl.watching(), 20, what="no watch left")
    waiter = subprocess.Popen(
        kubectl.argv("wait", "--for=delete", "cm/short", "--timeout=20s"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Deleted before kubectl wait read it, the object would be "already gone": no output.
    wait_until(kubectl.watching, 20, what="kubectl wait to watch")
    kubectl.ok("delete", "cm", "short", "--wait=false")
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert "condition met" in out
    missing = kubectl.run("wait", "--for=condition=Available", "deploy/nope", "--timeout=2s")
    assert missing.returncode == 1 and "NotFound" in missing.stderr


def test_cordon_uncordon_and_taint_nodes(kubectl: Agent) -> None:
    assert "cordoned" in kubectl.ok("cordon", "n2")
    table = rows(kubectl.ok("get", "nodes"))
    n2 = next(r for r in table if r[0] == "n2")
    assert n2[table[0].index("STATUS")] == "Ready,SchedulingDisabled"
    assert "uncordoned" in kubectl.ok("uncordon", "n2")
    kubectl.ok("taint", "nodes", "n1", "dedicated=gpu:NoSchedule")
    taints = kubectl.json("get", "node", "n1")["spec"]["taints"]
    assert {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"} in taints
    kubectl.ok("taint", "nodes", "n1", "dedicated-")
    assert not kubectl.json("get", "node", "n1")["spec"].get("taints")


def test_logs_of_a_pod_that_runs_nowhere_say_why(kubectl: Agent) -> None:
    pod = kubectl.ok("get", "pods", "-o", "name").split()[0]
    result = kubectl.run("logs", pod)
    assert result.returncode == 1 and "runs nowhere here" in result.stderr
