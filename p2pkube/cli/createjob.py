"""``p2pkube create job NAME --from=cronjob/NAME``: run a CronJob's job template now, as
kubectl does (a Job owned by the CronJob, annotated ``cronjob.kubernetes.io/instantiate:
manual``; the CronJob's history and ``active`` count it like its scheduled Jobs)."""

from __future__ import annotations

import copy

import click

from p2pkube.cli.common import DEFAULT_NAMESPACE, CliError, State, data_dir_option, namespace_option
from p2pkube.cli.kinds import find_resource
from p2pkube.cli.output import dump
from p2pkube.model.names import dns_subdomain_error

INSTANTIATE_ANNOTATION = "cronjob.kubernetes.io/instantiate"


@click.command("job")
@click.argument("name")
@click.option(
    "--from",
    "source",
    required=True,
    metavar="cronjob/NAME",
    help="The CronJob whose job template to run (only cronjob is supported, as in kubectl).",
)
@namespace_option
@click.option("-o", "--output", type=click.Choice(("json", "yaml", "name")), default=None)
@data_dir_option
@click.pass_obj
def create_job(
    state: State, name: str, source: str, namespace: str | None, output: str | None
) -> None:
    """Create a Job from a CronJob's job template, now."""
    if problem := dns_subdomain_error(name):
        raise click.BadParameter(f"{name!r} {problem}", param_hint="'NAME'")
    kind, slash, source_name = source.partition("/")
    resource = find_resource(kind) if slash and source_name else None
    if resource is None or resource.kind != "CronJob":
        raise CliError(f"from must be an existing cronjob: cronjob/NAME, not {source!r}")
    namespace = namespace or DEFAULT_NAMESPACE
    client = state.client()
    cronjob = client.get_object("CronJob", namespace, source_name)
    template = copy.deepcopy(cronjob["spec"]["jobTemplate"])
    template_meta = template.get("metadata") or {}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": template_meta.get("labels") or {},
            "annotations": {
                **(template_meta.get("annotations") or {}),
                INSTANTIATE_ANNOTATION: "manual",
            },
            "ownerReferences": [
                {
                    "apiVersion": cronjob.get("apiVersion", "batch/v1"),
                    "kind": "CronJob",
                    "name": source_name,
                    "uid": cronjob["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": template["spec"],
    }
    stored = client.create_object(job)
    if output in ("json", "yaml"):
        click.echo(dump(stored, output))
    elif output == "name":
        click.echo(f"job/{name}")
    else:
        click.echo(f"job/{name} created")
