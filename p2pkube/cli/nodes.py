"""``p2pkube cordon``, ``uncordon`` and ``taint``: a Node's spec, as kubectl edits it.

Each reads the Node from the local agent, changes its ``spec.unschedulable`` or
``spec.taints`` and writes it back; the agent validates the write (only the spec and the
labels of a Node are a user's to write) and keeps the ``node.kubernetes.io/unschedulable``
taint in step with the cordon. What they print is kubectl's: ``node/n1 cordoned``, ``node/n1
already cordoned``, ``node/n1 tainted``, ``node/n1 untainted``, ``node/n1 modified``.
"""

from __future__ import annotations

from typing import Any

import click

from p2pkube.cli.common import CliError, State, data_dir_option
from p2pkube.cli.get import lookup_resource
from p2pkube.model.names import label_key_error, label_value_error
from p2pkube.model.taints import EFFECTS, taint_text


def _nodes(state: State, names: tuple[str, ...], selector: str | None) -> list[dict[str, Any]]:
    client = state.client()
    if selector is not None:
        if names:
            raise click.UsageError("give node names or --selector, not both")
        found = client.list_nodes(selector)
        if not found:
            raise CliError(f"no nodes match the selector {selector!r}")
        return found
    if not names:
        raise click.UsageError("give at least one NODE (or --selector)")
    return [client.get_node(name) for name in names]


def _write(state: State, node: dict[str, Any], spec: dict[str, Any]) -> None:
    """Write ``node`` back with ``spec`` (metadata as read: its labels stay)."""
    meta = node.get("metadata") or {}
    state.client().put_object(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": meta.get("name"),
                "labels": meta.get("labels") or {},
                **({"annotations": meta["annotations"]} if meta.get("annotations") else {}),
            },
            "spec": spec,
        }
    )


def _set_unschedulable(
    state: State, names: tuple[str, ...], selector: str | None, cordon: bool
) -> None:
    verb = "cordoned" if cordon else "uncordoned"
    for node in _nodes(state, names, selector):
        name = (node.get("metadata") or {}).get("name")
        spec = dict(node.get("spec") or {})
        if bool(spec.get("unschedulable")) == cordon:
            click.echo(f"node/{name} already {verb}")
            continue
        spec["unschedulable"] = cordon
        _write(state, node, spec)
        click.echo(f"node/{name} {verb}")


_SELECTOR = click.option(
    "-l", "--selector", default=None, help="Label selector (e.g. zone=a) instead of names."
)


@click.command()
@click.argument("names", nargs=-1, metavar="NODE...")
@_SELECTOR
@data_dir_option
@click.pass_obj
def cordon(state: State, names: tuple[str, ...], selector: str | None) -> None:
    """Mark nodes unschedulable: no new pod is placed there (DaemonSet pods still are), and
    the pods running there keep running."""
    _set_unschedulable(state, names, selector, cordon=True)


@click.command()
@click.argument("names", nargs=-1, metavar="NODE...")
@_SELECTOR
@data_dir_option
@click.pass_obj
def uncordon(state: State, names: tuple[str, ...], selector: str | None) -> None:
    """Mark nodes schedulable again."""
    _set_unschedulable(state, names, selector, cordon=False)


def parse_taint(spec: str) -> tuple[dict[str, Any], bool]:
    """``key[=value]:Effect`` to add, or ``key[:Effect]-`` to remove (then without an
    effect: every effect of ``key``), as kubectl reads them; (taint, removal)."""
    removal = spec.endswith("-")
    text = spec[:-1] if removal else spec
    head, colon, effect = text.partition(":")
    key, eq, value = head.partition("=")
    problems = []
    if not colon and not removal:
        problems.append("expected key[=value]:Effect to add, key[:Effect]- to remove")
    if colon and effect not in EFFECTS:
        problems.append(f"unknown taint effect {effect!r} (supported: {', '.join(EFFECTS)})")
    if problem := label_key_error(key):
        problems.append(f"invalid key {key!r}: {problem}")
    if eq and (problem := label_value_error(value)):
        problems.append(f"invalid value {value!r}: {problem}")
    if problems:
        raise click.BadParameter(f"invalid taint spec: {spec}, {'; '.join(problems)}")
    taint: dict[str, Any] = {"key": key}
    if value:
        taint["value"] = value
    if effect:
        taint["effect"] = effect
    return taint, removal


def retaint(
    name: str,
    old: list[dict[str, Any]],
    add: list[dict[str, Any]],
    remove: list[dict[str, Any]],
    overwrite: bool,
) -> tuple[str, list[dict[str, Any]]]:
    """kubectl's ``reorganizeTaints``: the node's new taints, and what to print (tainted,
    untainted or modified); CliError for an existing taint without ``--overwrite`` or a
    removal that matches nothing."""
    if not overwrite:
        for taint in add:
            if any(_same(taint, t) for t in old):
                raise CliError(
                    f"node {name} already has {taint['key']} taint(s) with same effect(s) "
                    "and --overwrite is false"
                )
    new = [dict(t) for t in add] + [t for t in old if not any(_same(t, a) for a in add)]
    added = len(new) != len(old)
    deleted = False
    for taint in remove:
        kept = [t for t in new if not _removes(taint, t)]
        if len(kept) == len(new):
            raise CliError(
                f'taint "{taint_text(taint) if "effect" in taint else taint["key"]}" not found'
            )
        new, deleted = kept, True
    if (added and deleted) or overwrite:
        return "modified", new
    return ("tainted" if added else "untainted"), new


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.get("key") == b.get("key") and a.get("effect") == b.get("effect")


def _removes(removal: dict[str, Any], taint: dict[str, Any]) -> bool:
    if "effect" in removal:
        return _same(removal, taint)
    return removal.get("key") == taint.get("key")


@click.command()
@click.argument("resource", metavar="nodes")
@click.argument("args", nargs=-1, metavar="NODE... KEY[=VALUE]:EFFECT... | KEY[:EFFECT]-...")
@_SELECTOR
@click.option("--overwrite", is_flag=True, help="Replace a taint with the same key and effect.")
@data_dir_option
@click.pass_obj
def taint(
    state: State, resource: str, args: tuple[str, ...], selector: str | None, overwrite: bool
) -> None:
    """Add or remove taints on nodes, as kubectl taint does.

    \b
      p2pkube taint nodes n1 dedicated=gpu:NoSchedule      # only pods that tolerate it
      p2pkube taint nodes n1 maintenance:NoExecute         # evicts pods that do not
      p2pkube taint nodes n1 dedicated:NoSchedule-         # removes it
      p2pkube taint nodes n1 dedicated-                    # removes every effect of the key
    Effects: NoSchedule, PreferNoSchedule, NoExecute.
    """
    if lookup_resource(resource).kind != "Node":
        raise click.BadParameter(f"{resource!r}: only nodes have taints", param_hint="'RESOURCE'")
    names = tuple(a for a in args if not _looks_like_taint(a))
    specs = [a for a in args if _looks_like_taint(a)]
    if not specs:
        raise click.UsageError("give at least one taint: KEY[=VALUE]:EFFECT or KEY[:EFFECT]-")
    parsed = [parse_taint(s) for s in specs]
    add = [t for t, removal in parsed if not removal]
    remove = [t for t, removal in parsed if removal]
    for taint_ in add:
        if any(_removes(r, taint_) for r in remove):
            raise CliError(
                "can not both modify and remove the following taint(s) in the "
                f"same command: {taint_text(taint_)}"
            )
    for node in _nodes(state, names, selector):
        name = str((node.get("metadata") or {}).get("name"))
        spec = dict(node.get("spec") or {})
        operation, taints = retaint(name, list(spec.get("taints") or []), add, remove, overwrite)
        spec["taints"] = taints
        _write(state, node, spec)
        click.echo(f"node/{name} {operation}")


def _looks_like_taint(arg: str) -> bool:
    """kubectl's rule: an argument with ``=`` or ``:``, or ending in ``-``, is a taint."""
    return "=" in arg or ":" in arg or arg.endswith("-")


COMMANDS = (cordon, uncordon, taint)
"""Registered by ``p2pkube.cli.main``."""
