"""PATCH as the Kubernetes API server applies it, so that ``kubectl patch``, ``apply``, ``edit``,
``label``, ``annotate``, ``scale``, ``set image`` and ``rollout restart`` work unchanged.

kubectl sends three kinds of patch, told apart by the request's content type:

- ``application/json-patch+json`` (RFC 6902): a list of operations (``kubectl patch --type
  json``), applied by the ``jsonpatch`` library;
- ``application/merge-patch+json`` (RFC 7386): maps merge, ``null`` deletes, anything else
  replaces (``label``, ``annotate``, ``scale``, ``patch --type merge``);
- ``application/strategic-merge-patch+json``: Kubernetes' own merge, the default of ``kubectl
  patch`` and what ``apply``, ``edit``, ``set image`` and ``rollout restart`` send. It merges
  some lists element by element instead of replacing them: ``containers`` by ``name``,
  ``ports`` by ``containerPort``, ``finalizers`` as a set. Which lists, and by which key, is
  Kubernetes' patch metadata (``x-kubernetes-patch-strategy`` and
  ``x-kubernetes-patch-merge-key`` in its OpenAPI schemas, :mod:`p2pkube.model.k8sschema`),
  never a table of our own. The semantics, directives included (``$patch``,
  ``$setElementOrder/``, ``$deleteFromPrimitiveList/``, ``$retainKeys``), are those of
  ``k8s.io/apimachinery/pkg/util/strategicpatch``, order of list elements included: an element
  a patch adds without ``$setElementOrder`` goes first, as on a real cluster. It differs on
  purpose in a few corners: a map new to the object that carries ``$patch: replace`` is set
  (Kubernetes drops it), ``$patch: merge`` on a map is the default it names (Kubernetes answers
  an error), an unknown ``$`` directive is a 400 (Kubernetes ignores it), and where
  Kubernetes' order depends on how Go shares slices (a patch that deletes and adds elements of
  a list with elements only the object has), an object's element goes after the new ones.

``application/apply-patch+yaml`` (server-side apply) is accepted in a simplified form: see
:func:`_server_side_apply` for how it differs from Kubernetes.

Failures raise :class:`PatchError`, an :class:`~p2pkube.api.status.ApiProblem` with the code the
API server answers: 400 a body that is not a patch, 415 a content type PATCH does not take, 422
a patch that does not apply to the object. A patch may not rename an object, move it to another
namespace or change its kind (:func:`_keep_identity`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonpatch
import jsonpointer
import yaml

from p2pkube.api.status import ApiProblem
from p2pkube.model.k8sschema import Schema, kind_schema, resolve

__all__ = [
    "APPLY_PATCH",
    "JSON_PATCH",
    "MAX_JSON_PATCH_OPERATIONS",
    "MERGE_PATCH",
    "PATCH_CONTENT_TYPES",
    "STRATEGIC_MERGE_PATCH",
    "PatchError",
    "apply_patch",
]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_CONTENT_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)
"""The content types PATCH takes, in the order the API server lists them in a 415."""

MAX_JSON_PATCH_OPERATIONS = 10_000
"""The API server's bound on the operations of one JSON patch (413 past it)."""

Document = dict[str, Any]


class PatchError(ApiProblem):
    """A PATCH that cannot be applied, with the HTTP code the Kubernetes API server answers (the
    server's middleware turns it into a Status, so kubectl prints the error it would print)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)


def apply_patch(current: Mapping[str, Any], body: bytes, content_type: str) -> Document:
    """The object ``current`` becomes under the PATCH ``body`` sent as ``content_type`` (a
    Content-Type header: parameters such as ``charset`` are ignored). ``current`` is a
    Kubernetes-shaped object and is left as it was; the result shares nothing with it.

    Raises :class:`PatchError`."""
    media_type = content_type.partition(";")[0].strip().lower()
    apply = _APPLIERS.get(media_type)
    if apply is None:
        raise PatchError(
            415,
            f'the body of the request was in an unknown format "{media_type}" - accepted media '
            f"types include: {', '.join(PATCH_CONTENT_TYPES)}",
        )
    try:
        patched = apply(copy.deepcopy(dict(current)), body)
    except RecursionError:
        raise PatchError(400, "the patch is nested too deeply") from None
    return _keep_identity(current, patched)


def _keep_identity(current: Mapping[str, Any], patched: Any) -> Document:
    """``patched``, refused if it names another object than ``current``, as the API server
    refuses it: another name or namespace is a 400 (the object no longer matches the URL it was
    sent to), another kind or apiVersion a 422 (it no longer decodes as the resource's type).
    What a patch only removes comes back, as the API server fills it from the request: the
    namespace, the kind, the apiVersion (a cluster-scoped object keeps having none)."""
    if not isinstance(patched, dict):
        raise PatchError(422, "the patched object is not a JSON object")
    for field in ("apiVersion", "kind"):
        was, now = current.get(field), patched.get(field)
        if now is None and was is not None:
            patched[field] = was
        elif now != was:
            raise PatchError(422, f"a patch may not change {field} (from {was!r} to {now!r})")
    metadata = patched.setdefault("metadata", {})
    if metadata is None:
        metadata = patched["metadata"] = {}
    if not isinstance(metadata, dict):
        raise PatchError(422, "the patched object's metadata is not a JSON object")
    current_metadata = current.get("metadata") or {}
    name = current_metadata.get("name")
    if metadata.get("name") != name:
        raise PatchError(
            400,
            f"the name of the object ({metadata.get('name') or ''}) does not match the name on "
            f"the URL ({name})",
        )
    namespace = current_metadata.get("namespace") or ""
    if not namespace:
        metadata.pop("namespace", None)
    elif not metadata.get("namespace"):
        metadata["namespace"] = namespace
    elif metadata["namespace"] != namespace:
        raise PatchError(
            400,
            "the namespace of the provided object does not match the namespace sent on the "
            f"request ({metadata['namespace']} is not {namespace})",
        )
    return patched


# --- Parsing -------------------------------------------------------------------------------


def _parse_json(body: bytes) -> Any:
    """The JSON document of a body (NaN and Infinity are not JSON, whatever Python accepts)."""
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are ValueErrors
        raise PatchError(400, f"the patch is not valid JSON: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _parse_json_object(body: bytes, what: str) -> Document:
    """A merge patch (plain or strategic) is an object: the API server refuses anything else."""
    patch = _parse_json(body)
    if not isinstance(patch, dict):
        raise PatchError(400, f"a {what} must be a JSON object, not {type(patch).__name__}")
    return patch


class _YamlAsJson(yaml.SafeLoader):
    """YAML read as Kubernetes reads it (converted to JSON): a timestamp stays a string, where
    YAML 1.1 would make it a date."""


_YamlAsJson.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


# --- RFC 6902 and RFC 7386 ------------------------------------------------------------------


def _json_patch(document: Document, body: bytes) -> Any:
    """RFC 6902 operations, in order: a malformed operation is a 400, one that fails (a ``test``
    that does not hold, a path that does not exist) a 422 with the library's reason."""
    operations = _parse_json(body)
    if not isinstance(operations, list):
        raise PatchError(400, "a JSON patch must be a list of operations")
    if len(operations) > MAX_JSON_PATCH_OPERATIONS:
        raise PatchError(
            413,
            f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, "
            f"got {len(operations)}",
        )
    try:
        patch = jsonpatch.JsonPatch(operations)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise PatchError(400, f"invalid JSON patch: {exc}") from None
    try:
        return patch.apply(document, in_place=True)
    except jsonpatch.InvalidJsonPatch as exc:
        raise PatchError(400, f"invalid JSON patch: {exc}") from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise PatchError(422, f"the JSON patch does not apply: {exc}") from None


def _merge_patch(document: Document, body: bytes) -> Any:
    return _json_merge(document, _parse_json_object(body, "merge patch"))


def _json_merge(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, ``null`` deletes, any other value replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _json_merge(merged.get(key), value)
    return merged


# --- Strategic merge patch ------------------------------------------------------------------

_PATCH = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ELEMENT_ORDER = "$setElementOrder/"
_DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList/"


@dataclass(frozen=True)
class _Field:
    """How a strategic merge patch treats one field, from the ``x-kubernetes-patch-*`` of its
    schema."""

    schema: Schema | None = None
    """The field's schema; None for a field Kubernetes does not define, merged as plain JSON."""
    strategy: str = ""
    """``merge``: a list merges (by ``merge_key``, or as a set of primitives); ``replace``: a map
    is replaced whole; none: a list is replaced, a map merged. ``retainKeys`` only tells clients
    to send ``$retainKeys``: the server obeys that directive wherever it is, as Kubernetes."""
    merge_key: str = ""

    @property
    def items(self) -> Schema | None:
        """The schema of the list's elements."""
        if self.schema is None:
            return None
        items = resolve(self.schema).get("items")
        return items if isinstance(items, dict) else None


def _field(schema: Schema | None, name: str) -> _Field:
    """Field ``name`` of an object of ``schema``: one of its properties, or a value of a map
    (labels, data, limits: no patch metadata below ``additionalProperties``)."""
    if schema is None:
        return _Field()
    schema = resolve(schema)
    field = (schema.get("properties") or {}).get(name)
    if isinstance(field, dict):
        strategies = str(field.get("x-kubernetes-patch-strategy", "")).split(",")
        strategy = next((s for s in ("merge", "replace") if s in strategies), "")
        return _Field(field, strategy, str(field.get("x-kubernetes-patch-merge-key", "")))
    values = schema.get("additionalProperties")
    return _Field(values) if isinstance(values, dict) else _Field()


def _strategic_merge_patch(document: Document, body: bytes) -> Document:
    return _strategic_merge(document, _parse_json_object(body, "strategic merge patch"))


def _strategic_merge(document: Document, patch: Document) -> Document:
    """Kubernetes' strategic merge of ``patch`` into ``document``. Kinds without a schema get
    a 415, as the API server answers for custom resources."""
    api_version, kind = str(document.get("apiVersion", "")), str(document.get("kind", ""))
    schema = kind_schema(api_version, kind)
    if schema is None:
        raise PatchError(
            415,
            f"strategic merge patch is not supported for {api_version} {kind}: use "
            f"{MERGE_PATCH} or {JSON_PATCH}",
        )
    return _merge_map(document, patch, schema)


def _merge_map(original: Document, patch: Document, schema: Schema | None) -> Document:
    """``patch`` merged into the map ``original``. Both belong to the caller's copies and are
    changed in place: the merged map is ``original``, unless ``$patch`` replaces it."""
    if _PATCH in patch:
        directive = patch.pop(_PATCH)
        if directive == "replace":
            return _taken(patch)
        if directive == "delete":
            return {}
        if directive != "merge":  # what a map does anyway (Kubernetes answers an error)
            raise PatchError(400, f"unknown patch type: {directive!r} in map {patch}")
    _retain_keys(original, patch)
    _set_element_orders(original, patch, schema)
    for key, value in patch.items():
        if key.startswith(_DELETE_FROM_PRIMITIVE_LIST):
            _delete_from_list(original, _directive_target(key), value)
        elif key.startswith("$"):
            raise PatchError(400, f"unknown directive {key!r} in the patch")
        elif value is None:
            original.pop(key, None)
        elif isinstance(value, dict) and isinstance(original.get(key), dict):
            field = _field(schema, key)
            if field.strategy == "replace":
                original[key] = _taken(value)
            else:
                original[key] = _merge_map(original[key], value, field.schema)
        elif isinstance(value, list) and isinstance(original.get(key), list):
            original[key] = _merge_list(original[key], value, _field(schema, key))
        elif _is_deletion(value):
            original.pop(key, None)
        else:
            original[key] = _taken(value)
    return original


def _taken(value: Any) -> Any:
    """A patch value taken as it is, where there is nothing to merge it with: without ``null``
    (which deletes only what exists) and without directives (which mean nothing here). A map
    that ``$patch: delete`` marks is left out, and so is any list element carrying ``$patch``
    (a deletion or a replace marker)."""
    if isinstance(value, list):
        return [_taken(item) for item in value if not _has_directive(item)]
    if not isinstance(value, dict):
        return value
    return {
        key: _taken(item)
        for key, item in value.items()
        if item is not None and not key.startswith("$") and not _is_deletion(item)
    }


def _has_directive(item: Any) -> bool:
    return isinstance(item, dict) and _PATCH in item


def _is_deletion(value: Any) -> bool:
    return isinstance(value, dict) and value.get(_PATCH) == "delete"


def _directive_target(key: str) -> str:
    """The field a ``$setElementOrder/<field>`` or ``$deleteFromPrimitiveList/<field>`` is for."""
    target = key.partition("/")[2]
    if not target:
        raise PatchError(400, f"invalid patch format: {key!r} names no field")
    return target


def _retain_keys(original: Document, patch: Document) -> None:
    """``$retainKeys``: the map keeps only these keys, the patch's values merged into them. A
    client sends it for a union (a Deployment's strategy, a volume's source): switching to
    ``Recreate`` drops ``rollingUpdate``. Every key the patch sets must be listed."""
    if _RETAIN_KEYS not in patch:
        return
    retained = patch.pop(_RETAIN_KEYS)
    if not isinstance(retained, list) or not all(isinstance(key, str) for key in retained):
        raise PatchError(400, "invalid patch format of retainKeys: not a list of field names")
    kept = set(retained)
    unlisted = sorted(
        key
        for key, value in patch.items()
        if value is not None and not key.startswith("$") and key not in kept
    )
    if unlisted:
        raise PatchError(
            400, f"invalid patch format of retainKeys: {', '.join(unlisted)} not in $retainKeys"
        )
    for key in [key for key in original if key not in kept]:
        del original[key]


def _set_element_orders(original: Document, patch: Document, schema: Schema | None) -> None:
    """Each ``$setElementOrder/<list>`` with its list: the list is merged, then its elements
    put in the directive's order (kubectl apply sends one for each list it touches, since the
    patch holds only the changed elements). Elements only the object has keep their place
    relative to the others. The list is taken out of ``patch``: it is done."""
    for directive in [key for key in patch if key.startswith(_SET_ELEMENT_ORDER)]:
        order = patch.pop(directive)
        name = _directive_target(directive)
        if not isinstance(order, list):
            raise PatchError(400, f"invalid patch format of setElementOrder list: {directive}")
        field = _field(schema, name)
        in_patch, present, patch_list = name in patch, original.get(name), patch.pop(name, None)
        if present is not None and not isinstance(present, list):
            raise PatchError(422, f"{directive}: {name} is not a list in the object")
        if in_patch and not isinstance(patch_list, list):
            raise PatchError(400, f"{directive}: {name} is not a list in the patch")
        _check_order(patch_list or [], order, field.merge_key)
        if present is None and patch_list is None:
            continue
        if present is None:
            merged = _taken(patch_list)
        elif patch_list is None:
            merged = present
        else:
            merged = _merge_list(present, patch_list, field)
        original[name] = _ordered(merged, order, present or [], field.merge_key)


def _check_order(patch_list: list[Any], order: list[Any], merge_key: str) -> None:
    """The patch's elements (deletions aside) must appear in ``$setElementOrder``, in the same
    order: the directive states the whole list."""
    for item in order:
        _require_merge_key(item, merge_key, "$setElementOrder")
    wanted = iter([_identity(item, merge_key) for item in order])
    for item in patch_list:
        if _has_directive(item):
            continue
        _require_merge_key(item, merge_key, "patch")
        if _identity(item, merge_key) not in wanted:  # consumes `wanted` up to the match
            raise PatchError(
                400,
                f"the order in the patch list {patch_list} does not match the "
                f"$setElementOrder list {order}",
            )


def _merge_list(original: list[Any], patch: list[Any], field: _Field) -> list[Any]:
    """A list field: merged if its patch strategy is ``merge`` (maps by merge key, primitives
    as a set), else replaced."""
    if field.strategy != "merge":
        return list(_taken(patch))
    if not original and not patch:
        return original
    if _element_type(original + patch) is not dict:
        merged = _unique(original + patch)
        return _ordered(merged, patch, original, "")
    merge_key = field.merge_key
    if not merge_key:
        raise PatchError(422, "cannot merge lists of maps without a merge key")
    original, patch = _list_directives(original, patch, merge_key)
    merged = list(original)
    for item in patch:
        _require_merge_key(item, merge_key, "patch")
        index = _index_of(merged, merge_key, item[merge_key])
        if index is None:
            merged.append(_taken(item))
        else:
            merged[index] = _merge_map(merged[index], item, field.items)
    return _ordered(merged, patch, original, merge_key)


def _element_type(items: list[Any]) -> type:
    """The one type of a merging list's elements (numbers are one type)."""
    types = {float if type(item) is int else type(item) for item in items}
    if list in types:
        raise PatchError(422, "lists of lists are not supported")
    if len(types) != 1:
        raise PatchError(422, f"list element types are not identical: {items}")
    return types.pop()


def _list_directives(
    original: list[Any], patch: list[Any], merge_key: str
) -> tuple[list[Any], list[Any]]:
    """(the object's list, the patch's elements to merge) once the patch's ``$patch`` elements
    are applied: ``{merge_key: k, $patch: delete}`` removes element k, ``{$patch: replace}``
    makes the patch's other elements the whole list."""
    remaining: list[Any] = []
    replace = False
    for item in patch:
        if _PATCH not in item:
            remaining.append(item)
            continue
        directive = item[_PATCH]
        if directive == "delete":
            _require_merge_key(item, merge_key, "patch")
            gone = _hashable(item[merge_key])
            original = [
                kept
                for kept in original
                if merge_key not in kept or _hashable(kept[merge_key]) != gone
            ]
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            raise PatchError(400, "merging lists cannot yet be specified in the patch")
        else:
            raise PatchError(400, f"unknown patch type: {directive!r} in list element {item}")
    if replace:
        return list(_taken(remaining)), []
    return original, remaining


def _delete_from_list(original: Document, name: str, values: Any) -> None:
    """``$deleteFromPrimitiveList/<list>``: these values leave the list (every copy)."""
    if not isinstance(values, list):
        raise PatchError(400, f"invalid patch format of primitive list: {name} is not a list")
    present = original.get(name)
    if isinstance(present, list):
        gone = {_hashable(value) for value in values}
        original[name] = [item for item in present if _hashable(item) not in gone]


def _ordered(merged: list[Any], wanted: list[Any], server: list[Any], merge_key: str) -> list[Any]:
    """``merged`` in order: the elements ``wanted`` names in its order, the others (only the
    object has them) in the object's order, interleaved as ``strategicpatch`` does: one of the
    object's goes before one of the patch's when the object had both, that one first. So a
    patch that only changes elements keeps the order, and an element new to the object goes
    before the object's remaining ones."""

    def identity(item: Any) -> Hashable:
        return _identity(item, merge_key)

    wanted_at, server_at = _positions(wanted, identity), _positions(server, identity)
    patched = sorted(
        (item for item in merged if identity(item) in wanted_at),
        key=lambda item: wanted_at[identity(item)],
    )
    kept = sorted(
        (item for item in merged if identity(item) not in wanted_at),
        key=lambda item: server_at.get(identity(item), len(server)),
    )
    result: list[Any] = []
    k = p = 0
    while k < len(kept) and p < len(patched):
        kept_at = server_at.get(identity(kept[k]))
        patched_at = server_at.get(identity(patched[p]))
        if kept_at is not None and patched_at is not None and kept_at < patched_at:
            result.append(kept[k])
            k += 1
        else:
            result.append(patched[p])
            p += 1
    return result + kept[k:] + patched[p:]


def _positions(items: list[Any], identity: Callable[[Any], Hashable]) -> dict[Hashable, int]:
    """Where each element first appears."""
    positions: dict[Hashable, int] = {}
    for position, item in enumerate(items):
        positions.setdefault(identity(item), position)
    return positions


def _identity(item: Any, merge_key: str) -> Hashable:
    """What makes two list elements the same element: the merge key's value, or for a list of
    primitives the value. An object's element without the merge key is only itself."""
    if not merge_key:
        return _hashable(item)
    if isinstance(item, dict) and merge_key in item:
        return _hashable(item[merge_key])
    return ("unkeyed", id(item))


def _hashable(value: Any) -> Hashable:
    """A JSON value as a dict key, equal only for equal JSON (``true`` is not ``1``)."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, int | float | str):
        return (type(value) is str, value)
    return ("json", json.dumps(value, sort_keys=True))


def _require_merge_key(item: Any, merge_key: str, where: str) -> None:
    if merge_key and not (isinstance(item, dict) and merge_key in item):
        raise PatchError(
            400, f"{where}: map {item} does not contain declared merge key: {merge_key}"
        )


def _index_of(items: list[Any], merge_key: str, value: Any) -> int | None:
    wanted = _hashable(value)
    for index, item in enumerate(items):
        if merge_key in item and _hashable(item[merge_key]) == wanted:
            return index
    return None


def _unique(items: list[Any]) -> list[Any]:
    """``items`` without repeats, first occurrences in order."""
    seen: set[Hashable] = set()
    unique = []
    for item in items:
        if (key := _hashable(item)) not in seen:
            seen.add(key)
            unique.append(item)
    return unique


# --- Server-side apply ----------------------------------------------------------------------


def _server_side_apply(document: Document, body: bytes) -> Document:
    """Server-side apply, simplified: the applied configuration (YAML or JSON) is merged into
    the object by the strategic merge rules above. Unlike Kubernetes there is no field
    ownership: no ``managedFields``, no conflicts between managers (``force`` means nothing),
    and a field a manager applied before but leaves out now is kept rather than removed; lists
    merge by their patch merge key, not by ``x-kubernetes-list-map-keys``."""
    try:
        loaded = yaml.load(body, Loader=_YamlAsJson)  # a SafeLoader: no Python objects
        applied = json.loads(json.dumps(loaded))  # YAML to JSON: keys become strings
    except (yaml.YAMLError, TypeError, ValueError) as exc:
        raise PatchError(400, f"error decoding YAML: {exc}") from None
    if not isinstance(applied, dict):
        raise PatchError(400, "error decoding YAML: the applied configuration is not an object")
    return _strategic_merge(document, applied)


_APPLIERS: dict[str, Callable[[Document, bytes], Any]] = {
    JSON_PATCH: _json_patch,
    MERGE_PATCH: _merge_patch,
    STRATEGIC_MERGE_PATCH: _strategic_merge_patch,
    APPLY_PATCH: _server_side_apply,
}
"""How each content type applies its body to (a copy of) the object."""
