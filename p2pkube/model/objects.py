"""User objects in the replicated state: validation, metadata, status merge, deletion.

The agent's API backend delegates here for every kind users write (Pods, ConfigMaps, ...).
Spec and status live under the same key in two maps (``objects``, ``status``) so that their
writers never collide; a reader sees them merged. A Pod's status carries the uid of the pod it
describes (``podUID``), so a status left over from an older pod of the same name is never shown
on a new one.

Deleting a Pod that runs on a Ready node is two-phase, like Kubernetes' graceful deletion: the
object gets ``metadata.deletionTimestamp`` (kubectl shows Terminating), the node's kubelet
stops it and then removes it. A pod on no node, or on a node that is not Ready, is removed at
once, as is any pod deleted with ``force``.

Validation is injected (``validate``): the native agent passes
:func:`p2pkube.model.schema.validate_object` (pydantic), so that this module, which the
browser node loads too, never imports pydantic. A browser node takes no object writes and
injects none.
"""

from __future__ import annotations

import builtins
import secrets
from collections.abc import Callable
from typing import Any

from p2pkube.model.apiversions import CLUSTER_SCOPED_KINDS, standardised
from p2pkube.model.errors import ObjectRefused, ValidationFailed
from p2pkube.model.nodeports import DEFAULT_NODE_PORTS, assign_node_ports
from p2pkube.model.podspec import containers
from p2pkube.model.secrets import SECRET_KIND, Sealer, opened, sealed
from p2pkube.model.taints import (
    NO_EXECUTE,
    NO_SCHEDULE,
    UNSCHEDULABLE_KEY,
    node_taints,
    unschedulable_taint,
)
from p2pkube.model.timestamps import utc_now
from p2pkube.model.watch import Render, WatchHub
from p2pkube.state import ClusterState, ValueTooLarge, object_key
from p2pkube.state.store import EVENTS, LOAD, OBJECTS, STATUS

BLOB_KIND = "Blob"
NAMESPACE_KIND = "Namespace"
DEFAULT_NAMESPACE = "default"
NODE_KIND = "Node"
KIND_LABEL = "p2pkube.io/kind"
"""The label every agent gives its Node (``native`` or ``browser``); only the agent sets it."""


def node_spec(spec: dict[str, Any], previous: dict[str, Any], now: str) -> dict[str, Any]:
    """A Node's spec as stored: ``unschedulable`` only when true, the unschedulable taint
    present exactly when it is (with the time it was added), and every NoExecute taint with
    a ``timeAdded`` (kept from ``previous`` for a taint that was there already, else
    ``now``)."""
    before = {
        (t.get("key"), t.get("value") or "", t.get("effect")): t.get("timeAdded")
        for t in node_taints({"spec": previous})
    }
    cordoned = spec.get("unschedulable") is True
    taints = []
    for taint in node_taints({"spec": spec}):
        if taint["key"] == UNSCHEDULABLE_KEY and taint["effect"] == NO_SCHEDULE:
            continue  # mirrors spec.unschedulable, added below
        if taint["effect"] == NO_EXECUTE and not taint.get("timeAdded"):
            ident = (taint["key"], taint.get("value") or "", taint["effect"])
            taint["timeAdded"] = before.get(ident) or now
        taints.append(taint)
    if cordoned:
        since = before.get((UNSCHEDULABLE_KEY, "", NO_SCHEDULE)) or now
        taints.append(unschedulable_taint(since))
    stored = {k: v for k, v in spec.items() if k not in ("unschedulable", "taints")}
    if cordoned:
        stored["unschedulable"] = True
    if taints:
        stored["taints"] = taints
    return stored


Warn = Callable[[str], None]
"""Hears each warning about an object written (a field Kubernetes defines that is ignored)."""
Validator = Callable[[dict[str, Any], Warn | None], dict[str, Any]]
"""An object as a client sent it (without status), and who hears the warnings -> the object
normalised (defaults filled, Kubernetes' apiVersion); raises ValidationFailed listing every
problem."""
CreationWrites = Callable[[str, dict[str, Any]], dict[tuple[str, str], Any]]
"""A new object's key and stored form -> other (map, key): value entries to store in the
same transaction."""


def merged(obj: dict[str, Any], status: Any) -> dict[str, Any]:
    """``obj`` with its status, unless the status belongs to an older object of that name;
    with its kind's standard apiVersion (objects stored by earlier p2pkube versions said
    ``p2pkube.io/v1``)."""
    obj = standardised(obj)
    if not isinstance(status, dict):
        return obj
    uid = status.get("podUID")
    if uid is not None and uid != obj.get("metadata", {}).get("uid"):
        return obj
    return {**obj, "status": status}


def map_of(kind: str) -> str:
    """The document map a kind lives in: events in their own (bounded) map."""
    return EVENTS if kind == "Event" else OBJECTS


class ObjectService:
    """Reads and writes user objects; every write returns once it is on disk."""

    def __init__(
        self,
        state: ClusterState,
        *,
        node_ready: Callable[[str], bool],
        validate: Validator | None = None,
        node_ports: range = DEFAULT_NODE_PORTS,
        creation_writes: CreationWrites | None = None,
        sealer: Sealer | None = None,
    ) -> None:
        self.state = state
        self.node_ready = node_ready
        self.validate = validate
        """None on a node that takes no object writes (a browser tab): :meth:`put` refuses."""
        self.node_ports = node_ports
        """``services.node_port_range``: NodePorts are allocated from it and checked against
        it when a Service is written (:mod:`p2pkube.model.nodeports`)."""
        self.creation_writes = creation_writes
        """Other entries stored in the transaction that creates an object (the node's
        scheduler claims the lease of a workload created here)."""
        self.sealer = sealer
        """Seals Secret values as they are written and opens them as they are read
        (:mod:`p2pkube.model.secrets`); None on a node that cannot (it then shows Secrets
        without their data)."""

    def list(self, kind: str, namespace: str | None) -> list[dict[str, Any]]:
        if kind == NAMESPACE_KIND:
            return self._namespaces()
        prefix = f"{kind}/" if namespace is None else f"{kind}/{namespace}/"
        objects = [
            self._shown(key, obj)
            for key, obj in self.state.items(map_of(kind), prefix)
            if isinstance(obj, dict)
        ]
        return sorted(
            objects, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])
        )

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind == NAMESPACE_KIND and name == DEFAULT_NAMESPACE:
            return next(ns for ns in self._namespaces() if ns["metadata"]["name"] == name)
        key = object_key(kind, namespace, name)
        obj = self.state.get(map_of(kind), key)
        return self._shown(key, obj) if isinstance(obj, dict) else None

    def _shown(self, key: str, obj: dict[str, Any]) -> dict[str, Any]:
        """A stored object as readers see it: with its status, a Secret opened."""
        if obj.get("kind") == SECRET_KIND:
            obj = opened(key, obj, self.sealer)
        status = self.state.get(STATUS, key)
        if obj.get("kind") == NAMESPACE_KIND and not isinstance(status, dict):
            status = {"phase": "Active"}
        return merged(obj, status)

    # -- namespaces ----------------------------------------------------------------------------
    def _namespaces(self) -> builtins.list[dict[str, Any]]:
        """Every Namespace, ``default`` included: it always exists, written or not."""
        found = [
            self._shown(key, obj)
            for key, obj in self.state.items(OBJECTS, f"{NAMESPACE_KIND}//")
            if isinstance(obj, dict)
        ]
        if not any(ns["metadata"]["name"] == DEFAULT_NAMESPACE for ns in found):
            found.append(
                {
                    "apiVersion": "v1",
                    "kind": NAMESPACE_KIND,
                    "metadata": {"name": DEFAULT_NAMESPACE},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                }
            )
        return sorted(found, key=lambda ns: ns["metadata"]["name"])

    def _check_namespace_takes_new(self, namespace: str) -> None:
        """ObjectRefused unless ``namespace`` exists and is not being deleted."""
        if namespace == DEFAULT_NAMESPACE:
            return
        found = self.state.get(OBJECTS, object_key(NAMESPACE_KIND, "", namespace))
        if not isinstance(found, dict):
            raise ObjectRefused(404, f'namespaces "{namespace}" not found')
        if found.get("metadata", {}).get("deletionTimestamp"):
            raise ObjectRefused(
                403,
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
            )

    async def _delete_namespace(self, name: str, obj: dict[str, Any], force: bool) -> None:
        """Kubernetes' namespace deletion: the namespace turns Terminating (it takes no new
        objects), everything in it is deleted in one transaction (running pods gracefully),
        and the namespace goes once nothing is left in it: at once, or when the node elected
        to collect (``sched.controllers.finalize_namespaces``) sees its last pod gone."""
        key = object_key(NAMESPACE_KIND, "", name)
        now = utc_now()
        marked = {**obj, "metadata": {"deletionTimestamp": now, **obj["metadata"]}}
        left = 0
        async with self.state.batch() as batch:
            batch.put(OBJECTS, key, marked)
            batch.put(STATUS, key, {"phase": "Terminating"})
            for map_name in (OBJECTS, EVENTS):
                for item_key, item in self.state.items(map_name, ""):
                    parts = item_key.split("/", 2)
                    if len(parts) != 3 or parts[1] != name or not isinstance(item, dict):
                        continue
                    if self._graceful(parts[0], item, force):
                        left += 1
                        if not item["metadata"].get("deletionTimestamp"):
                            meta = {**item["metadata"], "deletionTimestamp": now}
                            batch.put(OBJECTS, item_key, {**item, "metadata": meta})
                        continue
                    batch.delete(map_name, item_key)
                    if map_name == OBJECTS and self.state.get(STATUS, item_key) is not None:
                        batch.delete(STATUS, item_key)
            if not left:
                batch.delete(OBJECTS, key)
                batch.delete(STATUS, key)

    def _graceful(self, kind: str, obj: dict[str, Any], force: bool) -> bool:
        """Whether deleting ``obj`` only marks it: a Pod on a Ready node, whose kubelet stops
        it and then removes it (unless ``force``)."""
        node = obj.get("spec", {}).get("nodeName") if kind == "Pod" else None
        return bool(node) and not force and self.node_ready(str(node))

    def render(self, key: str) -> dict[str, Any] | None:
        """The object under a document key (``Kind/namespace/name``) as :meth:`get` shows it."""
        kind, namespace, name = key.split("/", 2)
        return self.get(kind, namespace, name)

    def watch_hub(self, render: Render | None = None) -> WatchHub:
        """A hub for watches on these objects, fed by every change of the state (local writes
        and peer updates alike, never polling). ``render`` shows an object as clients see it
        (default :meth:`render`; the node shows Nodes with their liveness). The hub lives as
        long as the state."""
        hub = WatchHub(
            render or self.render,
            lambda kind: self.state.keys(map_of(kind)),
            exists=lambda key: self.state.get(map_of(key.split("/", 1)[0]), key) is not None,
        )

        def publish(map_name: str, keys: set[str], origin: object) -> None:
            if map_name in (OBJECTS, STATUS, EVENTS):
                # The replay at open (LOAD) comes before the state can be read: what it
                # loads is taken to exist.
                hub.publish(keys, loaded=origin is LOAD)

        self.state.on_change(publish)
        return hub

    async def put(
        self, obj: dict[str, Any], warn: Warn | None = None, *, dry_run: bool = False
    ) -> dict[str, Any]:
        """Validate and store (create or replace); ValidationFailed lists every problem,
        ``warn`` hears every warning. ``dry_run`` does every check and returns what would be
        stored, writing nothing (Kubernetes' ``dryRun=All``)."""
        if self.validate is None:
            raise RuntimeError("this node takes no object writes (no validator was injected)")
        valid = self.validate({k: v for k, v in obj.items() if k != "status"}, warn)
        kind = valid["kind"]
        if kind == NODE_KIND:
            return await self._put_node(
                valid, labels_given="labels" in obj["metadata"], dry_run=dry_run
            )
        metadata = valid["metadata"]
        namespace = "" if kind in CLUSTER_SCOPED_KINDS else metadata.get("namespace") or "default"
        key = object_key(kind, namespace, metadata["name"])
        previous = self.state.get(OBJECTS, key)
        if namespace and not isinstance(previous, dict):
            self._check_namespace_takes_new(namespace)
        old_meta = previous.get("metadata", {}) if isinstance(previous, dict) else {}
        self._check_images(valid)
        if kind == "Pod":
            self._check_pod(valid, previous)
        if kind == "Service":
            others = (o for k, o in self.state.items(OBJECTS, "Service/") if k != key)
            valid = assign_node_ports(valid, previous, others, node_ports=self.node_ports)
        generation = int(old_meta.get("generation") or 0)
        if not isinstance(previous, dict) or previous.get("spec") != valid.get("spec"):
            generation += 1  # spec changes bump it, as in Kubernetes (controllers observe it)
        stored = {
            **valid,
            "metadata": {
                **{
                    k: v
                    for k, v in metadata.items()
                    if k not in ("deletionTimestamp", "generation", "namespace")
                },
                **(
                    {"ownerReferences": old_meta["ownerReferences"]}
                    if old_meta.get("ownerReferences")
                    else {}
                ),
                **({"namespace": namespace} if namespace else {}),
                "uid": old_meta.get("uid") or secrets.token_hex(16),
                "creationTimestamp": old_meta.get("creationTimestamp") or utc_now(),
                "generation": generation,
                **(
                    {"deletionTimestamp": old_meta["deletionTimestamp"]}
                    if old_meta.get("deletionTimestamp")
                    else {}
                ),
            },
        }
        if dry_run:
            return stored
        extra: dict[tuple[str, str], Any] = {}
        if self.creation_writes is not None and not isinstance(previous, dict):
            extra = self.creation_writes(key, stored)
        written = stored
        if kind == SECRET_KIND:
            if self.sealer is None:
                raise RuntimeError("this node cannot seal Secrets (no sealer was injected)")
            written = sealed(key, stored, self.sealer)
        try:
            async with self.state.batch() as batch:
                batch.put(OBJECTS, key, written)
                for (map_name, extra_key), value in extra.items():
                    batch.put(map_name, extra_key, value)
        except ValueTooLarge as exc:
            # Kubernetes' wording for a ConfigMap over 1 MiB; the size is the stored encoding.
            raise ValidationFailed(
                [
                    f"[]: Too long: {kind} {namespace}/{metadata['name']} is {exc.size:,} "
                    f"bytes encoded, must have at most {exc.limit:,} bytes "
                    "(state.max_object_bytes)"
                ]
            ) from None
        return stored

    async def _put_node(
        self, valid: dict[str, Any], *, labels_given: bool, dry_run: bool = False
    ) -> dict[str, Any]:
        """A user's write of a Node: its spec (cordon, taints) and labels, nothing else.

        The Node object is its agent's (uid, creation time, the labels it was started with,
        its annotations), so a Node is never created here, its annotations and its kind label
        cannot change, and what the write leaves out of its metadata is kept. A cordon is
        also the ``node.kubernetes.io/unschedulable:NoSchedule`` taint, kept in step with
        ``spec.unschedulable`` as Kubernetes' node lifecycle controller keeps it; NoExecute
        taints get a ``timeAdded`` (their ``tolerationSeconds`` count from it), the one they
        had when the same taint was there before.
        """
        meta = valid["metadata"]  # (its namespace, if any, is dropped: Nodes have none)
        name = meta["name"]
        key = object_key(NODE_KIND, "", name)
        previous = self.state.get(OBJECTS, key)
        if not isinstance(previous, dict):
            raise ValidationFailed(
                [
                    f"metadata.name: Not found: {name!r}: nodes are created by their agents "
                    "(p2pkube join), not written"
                ]
            )
        old_meta = dict(previous.get("metadata") or {})
        problems = []
        old_annotations = old_meta.get("annotations") or {}
        if meta.get("annotations") and meta["annotations"] != old_annotations:
            problems.append(
                "metadata.annotations: Forbidden: a node's annotations are its agent's "
                "(write spec.unschedulable, spec.taints or metadata.labels)"
            )
        old_labels = dict(old_meta.get("labels") or {})
        labels = dict(meta.get("labels") or {}) if labels_given else dict(old_labels)
        kind_label = old_labels.get(KIND_LABEL)
        if kind_label is not None:
            if labels.get(KIND_LABEL, kind_label) != kind_label:
                problems.append(
                    f"metadata.labels: Forbidden: {KIND_LABEL} is set by the node's agent "
                    f"({kind_label})"
                )
            labels[KIND_LABEL] = kind_label
        if problems:
            raise ValidationFailed(problems)
        spec = node_spec(valid.get("spec") or {}, previous.get("spec") or {}, utc_now())
        stored = {
            "apiVersion": "v1",
            "kind": NODE_KIND,
            "metadata": {**old_meta, "labels": labels},
            "spec": spec,
        }
        if not dry_run:
            await self.state.put(OBJECTS, key, stored)
        return stored

    def _check_images(self, obj: dict[str, Any]) -> None:
        problems = [
            f"{path}.image: no module {container['image']} in the cluster (publish it with "
            "p2pkube publish, or apply -f a manifest naming the .wasm file)"
            for path, container in containers(obj)
            if self.state.get(OBJECTS, object_key(BLOB_KIND, "", container["image"])) is None
        ]
        if problems:
            raise ValidationFailed(problems)

    def _check_pod(self, pod: dict[str, Any], previous: Any) -> None:
        if not isinstance(previous, dict):
            return
        before, after = dict(previous.get("spec", {})), dict(pod["spec"])
        if before.get("nodeName") is None:  # binding a pod to a node is the one update
            after.pop("nodeName", None)
            before.pop("nodeName", None)
        if before != after:
            raise ValidationFailed(
                [
                    "spec: Forbidden: pod updates may not change the spec "
                    "(delete the pod and create it again)"
                ]
            )

    async def put_status(
        self, kind: str, namespace: str, name: str, status: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        """Replace an object's status (Kubernetes' status subresource), as its controller or
        kubelet does; LookupError when there is no such object. A status is free-form to the
        object service: whoever owns it next overwrites it, as in Kubernetes."""
        key = object_key(kind, namespace, name)
        if not isinstance(self.state.get(map_of(kind), key), dict) or map_of(kind) != OBJECTS:
            raise LookupError(key)
        if not dry_run:
            await self.state.put(STATUS, key, status)
        found = self.get(kind, namespace, name)
        assert found is not None
        return found if not dry_run else {**found, "status": status}

    async def delete(self, kind: str, namespace: str, name: str, *, force: bool = False) -> bool:
        """Delete an object (a running Pod: mark it, its node finishes); False if absent."""
        key = object_key(kind, namespace, name)
        obj = self.state.get(map_of(kind), key)
        if kind == NAMESPACE_KIND and name == DEFAULT_NAMESPACE:
            raise ObjectRefused(
                403, f'namespaces "{name}" is forbidden: this namespace may not be deleted'
            )
        if not isinstance(obj, dict):
            return False
        if map_of(kind) != OBJECTS:
            await self.state.delete(map_of(kind), key)
            return True
        if kind == NAMESPACE_KIND:
            await self._delete_namespace(name, obj, force)
            return True
        if self._graceful(kind, obj, force):
            if not obj["metadata"].get("deletionTimestamp"):
                marked = {**obj, "metadata": {**obj["metadata"], "deletionTimestamp": utc_now()}}
                await self.state.put(OBJECTS, key, marked)
            return True
        await self.state.delete(OBJECTS, key)
        if self.state.get(STATUS, key) is not None:
            await self.state.delete(STATUS, key)
        return True
