"""``p2pkube scale`` and ``p2pkube rollout``: replicas and revisions of workloads, like kubectl.

Changes are read-modify-write through the local API: the object is read, changed and PUT back
whole (its status and server-set metadata left out); the scheduler that leads the workload does
the rest. ``rollout status`` follows the server's watch stream, so it prints a line as soon as
the workload's status changes and never polls.

Revisions are a Deployment's ReplicaSets: each carries its revision number in the annotation
``deployment.kubernetes.io/revision`` and its pod template plus the ``pod-template-hash`` label.
``rollout undo`` copies an older ReplicaSet's template (without that label) back into the
Deployment, which the Deployment controller then rolls out as the newest revision.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from p2pkube.api.client import WATCH_SECONDS, ApiClient
from p2pkube.cli.common import (
    DEFAULT_NAMESPACE,
    CliError,
    Duration,
    KubectlCommand,
    State,
    data_dir_option,
    namespace_option,
)
from p2pkube.cli.completion import complete_names, complete_resources
from p2pkube.cli.describe_pods import pod_template
from p2pkube.cli.describe_sections import controller_ref
from p2pkube.cli.describe_workloads import (
    deployment_replicasets,
    is_current,
    revision,
    without_hash,
)
from p2pkube.cli.kinds import find_resource
from p2pkube.cli.output import Resource, field
from p2pkube.cli.progress import Bar, bar
from p2pkube.cli.tabwriter import Writer

SERVER_FIELDS = ("generation", "resourceVersion", "managedFields", "selfLink")
"""Metadata the agent sets itself and refuses to be sent."""
CHANGE_CAUSE = "kubernetes.io/change-cause"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def for_update(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stored object fit to PUT back: no status, no server-set metadata."""
    body = copy.deepcopy({k: v for k, v in obj.items() if k != "status"})
    body["metadata"] = {
        k: v for k, v in (body.get("metadata") or {}).items() if k not in SERVER_FIELDS
    }
    return body


def _target(resource_name: str, name: str | None, kinds: tuple[str, ...]) -> tuple[Resource, str]:
    """The (resource, name) of ``RESOURCE NAME`` or ``TYPE/NAME``, for one of ``kinds``."""
    if name is None and "/" in resource_name:
        resource_name, _, name = resource_name.partition("/")
    if not name:
        raise click.UsageError("give RESOURCE NAME or TYPE/NAME (e.g. deployment web)")
    resource = find_resource(resource_name)
    if resource is None or resource.kind not in kinds:
        allowed = ", ".join(f"{k.lower()}s" for k in kinds)
        raise CliError(f"no {resource_name!r} here: this command works on {allowed}")
    return resource, name


def _ref(resource: Resource, name: str) -> str:
    return f"{resource.singular}/{name}"


# --- scale -----------------------------------------------------------------------------------


@click.command()
@click.argument("resource_name", metavar="RESOURCE", shell_complete=complete_resources)
@click.argument("names", nargs=-1, metavar="NAME...", shell_complete=complete_names)
@click.option(
    "--replicas", type=click.IntRange(0, 10_000), required=True, help="The new number of pods."
)
@click.option(
    "--current-replicas",
    type=click.IntRange(min=0),
    default=None,
    help="Precondition: scale only if spec.replicas is this now.",
)
@namespace_option
@data_dir_option
@click.pass_obj
def scale(
    state: State,
    resource_name: str,
    names: tuple[str, ...],
    replicas: int,
    current_replicas: int | None,
    namespace: str | None,
) -> None:
    """Set the number of pods of a deployment or replica set.

    RESOURCE is deployment (deploy) or replicaset (rs), then the names; or TYPE/NAME... . A
    replica set that a deployment controls cannot be scaled by hand (its deployment would undo
    it): scale the deployment.
    """
    kinds = ("Deployment", "ReplicaSet")
    if "/" in resource_name:
        targets = [_target(arg, None, kinds) for arg in (resource_name, *names)]
    elif not names:
        raise click.UsageError("give RESOURCE NAME... or TYPE/NAME... (e.g. deployment web)")
    else:
        targets = [_target(resource_name, n, kinds) for n in names]
    client = state.client()
    ns = namespace or DEFAULT_NAMESPACE
    for resource, name in targets:
        obj = client.get_object(resource.kind, ns, name)
        owner = controller_ref(obj)
        if owner is not None:
            raise CliError(
                f'{resource.singular} "{name}" is controlled by {owner.get("kind")}/'
                f"{owner.get('name')}: scale that instead (its controller would undo this)"
            )
        now = field(obj, "spec.replicas", 1)
        if current_replicas is not None and now != current_replicas:
            raise CliError(f"Expected replicas to be {current_replicas}, was {now}")
        body = for_update(obj)
        body.setdefault("spec", {})["replicas"] = replicas
        client.put_object(body)
        click.echo(f"{_ref(resource, name)} scaled")


# --- rollout ---------------------------------------------------------------------------------


@click.group()
def rollout() -> None:
    """Follow, list, undo and restart the rollouts of deployments (and daemon sets).

    \b
    status   wait for a rollout to finish, printing its progress
    history  the revisions of a deployment
    undo     roll back to the previous (or a given) revision
    restart  roll out every pod again (a new template annotation)
    """


def deployment_progress(deployment: dict[str, Any]) -> tuple[str, bool]:
    """kubectl's status line for a Deployment rollout, and whether the rollout is done: the
    controller observed the newest spec and every replica is updated and available, with no
    old or surplus replica left."""
    name = field(deployment, "metadata.name", "")
    generation = int(field(deployment, "metadata.generation", 0) or 0)
    status = deployment.get("status") or {}
    observed = status.get("observedGeneration")
    if not isinstance(observed, int) or observed < generation:
        return "Waiting for deployment spec update to be observed...", False
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and (
            condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            raise CliError(f'deployment "{name}" exceeded its progress deadline')
    desired = int(field(deployment, "spec.replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    waiting = f'Waiting for deployment "{name}" rollout to finish: '
    if updated < desired:
        return f"{waiting}{updated} out of {desired} new replicas have been updated...", False
    if total > updated:
        return f"{waiting}{total - updated} old replicas are pending termination...", False
    if updated > desired:
        return f"{waiting}{updated - desired} extra replicas are pending termination...", False
    if available < updated:
        return f"{waiting}{available} of {updated} updated replicas are available...", False
    return f'deployment "{name}" successfully rolled out', True


def daemonset_progress(ds: dict[str, Any]) -> tuple[str, bool]:
    """kubectl's status line for a DaemonSet rollout, and whether it is done."""
    name = field(ds, "metadata.name", "")
    generation = int(field(ds, "metadata.generation", 0) or 0)
    status = ds.get("status") or {}
    observed = status.get("observedGeneration")
    if not isinstance(observed, int) or observed < generation:
        return "Waiting for daemon set spec update to be observed...", False
    desired = int(status.get("desiredNumberScheduled") or 0)
    updated = int(status.get("updatedNumberScheduled") or 0)
    available = int(status.get("numberAvailable") or 0)
    waiting = f'Waiting for daemon set "{name}" rollout to finish: '
    if updated < desired:
        return f"{waiting}{updated} out of {desired} new pods have been updated...", False
    if available < desired:
        return f"{waiting}{available} of {desired} updated pods are available...", False
    return f'daemon set "{name}" successfully rolled out', True


PROGRESS: dict[str, Callable[[dict[str, Any]], tuple[str, bool]]] = {
    "Deployment": deployment_progress,
    "DaemonSet": daemonset_progress,
}


def rollout_counts(kind: str, obj: dict[str, Any]) -> tuple[int, int, int]:
    """(replicas updated, of those available, desired) of a Deployment or DaemonSet: what
    the bar of ``rollout status`` shows on a terminal."""
    status = obj.get("status") or {}
    if kind == "DaemonSet":
        desired = int(status.get("desiredNumberScheduled") or 0)
        updated = int(status.get("updatedNumberScheduled") or 0)
        available = int(status.get("numberAvailable") or 0)
    else:
        desired = int(field(obj, "spec.replicas", 1))
        updated = int(status.get("updatedReplicas") or 0)
        available = int(status.get("availableReplicas") or 0)
    return updated, min(updated, available), desired


def wait_for_rollout(
    client: ApiClient,
    kind: str,
    namespace: str,
    name: str,
    *,
    timeout: float = 0,
    watch: bool = True,
) -> None:
    """Print the rollout's progress until it is done (returns), its timeout passes or the
    object goes away (CliError), from the watch stream (a stream the agent ends is opened
    again). Off a terminal each status line is printed when the status changes to it; on one
    (stderr) a bar shows the replicas updated and available of those desired instead, and only
    the last line is printed."""
    what = f'{kind.lower()} "{name}"'
    obj = client.get_object(kind, namespace, name)
    message, done = PROGRESS[kind](obj)
    if done or not watch:
        click.echo(message)
        return
    with bar(f"rollout of {what}", rollout_counts(kind, obj)[2]) as drawn:
        message = _follow_rollout(client, kind, namespace, name, obj, timeout, drawn)
    click.echo(message)


def _follow_rollout(
    client: ApiClient,
    kind: str,
    namespace: str,
    name: str,
    obj: dict[str, Any],
    timeout: float,
    drawn: Bar | None,
) -> str:
    """The watch of :func:`wait_for_rollout`; returns the final line, once done."""
    progress = PROGRESS[kind]
    deadline = time.monotonic() + timeout if timeout > 0 else None
    last: list[str] = []

    def show(obj: dict[str, Any]) -> str | None:
        message, done = progress(obj)
        if done:
            return message
        if drawn is not None:
            updated, available, desired = rollout_counts(kind, obj)
            drawn.show(available, desired, item=f"{updated} updated, {available} available")
        elif not last or last[-1] != message:
            last.append(message)
            click.echo(message)
        return None

    show(obj)
    what = f'{kind.lower()} "{name}"'
    while True:
        seconds = WATCH_SECONDS
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            seconds = max(1, math.ceil(left))
        events = client.watch(kind, namespace, timeout_seconds=seconds)
        try:
            for event in events:
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:  # we fell behind: watch again from now
                        break
                    raise CliError(f"the watch failed: {obj.get('message', obj)}")
                if field(obj, "metadata.name") != name:
                    continue
                if event.get("type") == "DELETED":
                    raise CliError(f"{what} was deleted while waiting for its rollout")
                if (final := show(obj)) is not None:
                    if drawn is not None:
                        updated, available, desired = rollout_counts(kind, obj)
                        drawn.show(available, desired, item=f"{updated} updated")
                    return final
        finally:
            events.close()
    raise CliError(f"timed out after {timeout:g}s waiting for the rollout of {what} to finish")


@rollout.command("status", cls=KubectlCommand)
@click.argument("resource_name", metavar="RESOURCE", shell_complete=complete_resources)
@click.argument("name", required=False, shell_complete=complete_names)
@click.option(
    "--timeout",
    type=Duration(),
    default="0s",
    show_default=True,
    help="Give up (exit 1) after this long, e.g. 90s or 5m; 0 waits forever.",
)
@click.option(
    "-w",
    "--watch/--no-watch",
    default=True,
    help="Wait for the rollout to finish (the default); --watch=false prints the status once.",
)
@namespace_option
@data_dir_option
@click.pass_obj
def rollout_status(
    state: State,
    resource_name: str,
    name: str | None,
    timeout: float,
    watch: bool,
    namespace: str | None,
) -> None:
    """Wait for a deployment's (or daemon set's) rollout to finish, printing its progress.

    Prints a line each time the progress changes, from the agent's watch stream. Exit 0 once
    every replica runs the newest template and is available ('deployment "web" successfully
    rolled out'); exit 1 when --timeout passes first or the object is deleted.
    """
    resource, name = _target(resource_name, name, ("Deployment", "DaemonSet"))
    wait_for_rollout(
        state.client(),
        resource.kind,
        namespace or DEFAULT_NAMESPACE,
        name,
        timeout=timeout,
        watch=watch,
    )


def owned_revisions(
    client: ApiClient, deployment: dict[str, Any]
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(the current ReplicaSet, every owned ReplicaSet oldest revision first)."""
    uid = field(deployment, "metadata.uid")
    namespace = field(deployment, "metadata.namespace") or DEFAULT_NAMESPACE
    owned = [
        rs
        for rs in client.list_objects("ReplicaSet", namespace)
        if uid and (controller_ref(rs) or {}).get("uid") == uid
    ]
    new, _old = deployment_replicasets(deployment, owned)
    owned.sort(key=revision)
    return new, owned


def _change_cause(rs: dict[str, Any], deployment: dict[str, Any], current: bool) -> str:
    cause = (field(rs, "metadata.annotations") or {}).get(CHANGE_CAUSE)
    if not cause and current:  # the current revision's cause is the deployment's own
        cause = (field(deployment, "metadata.annotations") or {}).get(CHANGE_CAUSE)
    return str(cause) if cause else "<none>"


@rollout.command("history")
@click.argument("resource_name", metavar="RESOURCE", shell_complete=complete_resources)
@click.argument("name", required=False, shell_complete=complete_names)
@click.option(
    "--revision",
    "wanted",
    type=click.IntRange(min=0),
    default=0,
    help="Show the pod template of this revision.",
)
@namespace_option
@data_dir_option
@click.pass_obj
def rollout_history(
    state: State, resource_name: str, name: str | None, wanted: int, namespace: str | None
) -> None:
    """List a deployment's revisions (REVISION, CHANGE-CAUSE), oldest first.

    CHANGE-CAUSE is the kubernetes.io/change-cause annotation of the revision's replica set
    (for the current revision, else the deployment's), or <none>.
    """
    resource, name = _target(resource_name, name, ("Deployment",))
    client = state.client()
    deployment = client.get_object("Deployment", namespace or DEFAULT_NAMESPACE, name)
    new, owned = owned_revisions(client, deployment)
    if wanted:
        chosen = next((rs for rs in owned if revision(rs) == wanted), None)
        if chosen is None:
            raise CliError(f"unable to find the specified revision {wanted}")
        w = Writer()
        pod_template(w, field(chosen, "spec.template"))
        click.echo(f"{_ref(resource, name)} with revision #{wanted}")
        click.echo(w.text(), nl=False)
        return
    if not owned:
        click.echo("No rollout history found.")
        return
    w = Writer()
    w.line(0, "REVISION", "CHANGE-CAUSE")
    for rs in owned:
        w.line(0, revision(rs), _change_cause(rs, deployment, rs is new))
    click.echo(_ref(resource, name))
    click.echo(w.text(), nl=False)


@rollout.command("undo")
@click.argument("resource_name", metavar="RESOURCE", shell_complete=complete_resources)
@click.argument("name", required=False, shell_complete=complete_names)
@click.option(
    "--to-revision",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="The revision to roll back to; 0 means the previous one.",
)
@namespace_option
@data_dir_option
@click.pass_obj
def rollout_undo(
    state: State, resource_name: str, name: str | None, to_revision: int, namespace: str | None
) -> None:
    """Roll a deployment back to its previous revision (or --to-revision N).

    The chosen revision's pod template becomes the deployment's again; the deployment then
    rolls it out (as a new revision number), like any other template change.
    """
    resource, name = _target(resource_name, name, ("Deployment",))
    client = state.client()
    deployment = client.get_object("Deployment", namespace or DEFAULT_NAMESPACE, name)
    _new, owned = owned_revisions(client, deployment)
    numbered = [rs for rs in owned if revision(rs) > 0]
    if to_revision:
        chosen = next((rs for rs in numbered if revision(rs) == to_revision), None)
        if chosen is None:
            raise CliError(f"unable to find specified revision {to_revision} in history")
    else:
        if len(numbered) < 2:
            raise CliError(
                f'no rollout history found for deployment "{name}" '
                "(it has no revision before the current one)"
            )
        chosen = numbered[-2]
    template = without_hash(copy.deepcopy(field(chosen, "spec.template")))
    if is_current(deployment, chosen):
        click.echo(
            f"{_ref(resource, name)} skipped rollback "
            f"(current template already matches revision {revision(chosen)})"
        )
        return
    body = for_update(deployment)
    body["spec"]["template"] = template
    cause = (field(chosen, "metadata.annotations") or {}).get(CHANGE_CAUSE)
    if cause:
        body["metadata"].setdefault("annotations", {})[CHANGE_CAUSE] = cause
    client.put_object(body)
    click.echo(f"{_ref(resource, name)} rolled back")


@rollout.command("restart")
@click.argument("resource_name", metavar="RESOURCE", shell_complete=complete_resources)
@click.argument("name", required=False, shell_complete=complete_names)
@namespace_option
@data_dir_option
@click.pass_obj
def rollout_restart(
    state: State, resource_name: str, name: str | None, namespace: str | None
) -> None:
    """Replace every pod of a deployment (or daemon set) through a new rollout.

    Sets the pod template annotation kubectl.kubernetes.io/restartedAt to now, which makes
    a new template, hence a new revision rolled out with the workload's strategy.
    """
    resource, name = _target(resource_name, name, ("Deployment", "DaemonSet"))
    client = state.client()
    obj = client.get_object(resource.kind, namespace or DEFAULT_NAMESPACE, name)
    body = for_update(obj)
    template = body.setdefault("spec", {}).setdefault("template", {})
    annotations = template.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[RESTARTED_AT] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    client.put_object(body)
    click.echo(f"{_ref(resource, name)} restarted")
