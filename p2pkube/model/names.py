"""Kubernetes name and label syntax: why a name, label key or label value is invalid.

The same rules as Kubernetes (apimachinery/pkg/util/validation), so that manifests and
selectors written for kubectl mean the same thing here. Pure functions: the CLI validates
``--label``/``--name`` with them without importing the HTTP layer or pydantic.
"""

from __future__ import annotations

import re

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


def env_name_error(name: str) -> str | None:
    """Why ``name`` is not an environment variable name (``env[].name``, an ``envFrom`` key
    with its prefix), or None if it is one."""
    if not _ENV_NAME.fullmatch(name) or len(name) > 256:
        return "must consist of letters, digits, '_', '-' or '.', and must not start with a digit"
    return None


def dns_label_error(name: str) -> str | None:
    """Why ``name`` is not an RFC 1123 label (node names, namespaces), or None if it is one."""
    if not name:
        return "must not be empty"
    if len(name) > 63:
        return f"must be no more than 63 characters (got {len(name)})"
    if not _DNS_LABEL.fullmatch(name):
        return (
            "must consist of lower case alphanumeric characters or '-', and must start and "
            "end with an alphanumeric character (e.g. 'my-name' or '123-abc')"
        )
    return None


def dns_subdomain_error(name: str) -> str | None:
    """Why ``name`` is not an RFC 1123 subdomain (most object names), or None if it is one."""
    if not name:
        return "must not be empty"
    if len(name) > 253:
        return f"must be no more than 253 characters (got {len(name)})"
    if not _DNS_SUBDOMAIN.fullmatch(name):
        return (
            "must consist of lower case alphanumeric characters, '-' or '.', and must start "
            "and end with an alphanumeric character (e.g. 'example.com')"
        )
    return None


def label_key_error(key: str) -> str | None:
    """Why ``key`` is not a valid label key (``[prefix/]name``), or None if it is one."""
    prefix, slash, name = key.rpartition("/")
    if slash:
        problem = dns_subdomain_error(prefix)
        if problem is not None:
            return f"prefix part {problem}"
    if not name:
        return "name part must not be empty"
    if len(name) > 63:
        return f"name part must be no more than 63 characters (got {len(name)})"
    if not _QUALIFIED_NAME.fullmatch(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character (e.g. 'MyName' or 'my.name')"
        )
    return None


def label_value_error(value: str) -> str | None:
    """Why ``value`` is not a valid label value (may be empty), or None if it is one."""
    if not value:
        return None
    if len(value) > 63:
        return f"must be no more than 63 characters (got {len(value)})"
    if not _QUALIFIED_NAME.fullmatch(value):
        return (
            "must be empty or consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character"
        )
    return None
