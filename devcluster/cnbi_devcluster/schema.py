"""CRD structural schemas: pruning of unknown fields and validation (pure).

What kube-apiserver does with a custom resource's ``openAPIV3Schema`` on every write:

- *prune*: drop fields the schema does not declare, unless the node (or an ancestor)
  sets ``x-kubernetes-preserve-unknown-fields: true``; ``additionalProperties`` declares a
  map whose values follow that schema. ``apiVersion``, ``kind`` and ``metadata`` at the root
  are never pruned.
- *validate*: ``type`` (object, array, string, integer, number, boolean), ``required``,
  ``enum``, ``pattern``, ``minLength``/``maxLength``, ``minimum``/``maximum``,
  ``minItems``/``maxItems``, ``nullable``, ``x-kubernetes-int-or-string``, ``format:
  date-time``. Messages follow the API's wording so they read like a real 422.

Not covered: CEL rules (``x-kubernetes-validations``), ``oneOf``/``anyOf``/``allOf``/``not``,
list-type/map-type uniqueness, defaults.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

PRESERVE = "x-kubernetes-preserve-unknown-fields"
ROOT_KEEP = ("apiVersion", "kind", "metadata")


def prune(value: Any, schema: dict | None, *, root: bool = False) -> Any:
    """``value`` without the fields ``schema`` does not declare (a new value)."""
    if not isinstance(schema, dict) or schema.get(PRESERVE):
        return value
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            if root and key in ROOT_KEEP:
                out[key] = item
            elif props is not None and key in props:
                out[key] = prune(item, props[key])
            elif isinstance(extra, dict):
                out[key] = prune(item, extra)
            elif extra is True or (
                props is None and extra is None and schema.get("type") != "object"
            ):
                out[key] = item
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(item, schema["items"]) for item in value]
    return value


def unknown_fields(
    value: Any, schema: dict | None, resolve=None, *, root: bool = False, path: str = ""
) -> list[str]:
    """The paths of the fields ``prune`` would drop (``spec.foo``, ``spec.items[0].bar``);
    ``resolve(name)`` looks up ``allOf: [{$ref: "#/components/schemas/NAME"}]`` references."""
    if isinstance(schema, dict) and resolve is not None:
        for ref in schema.get("allOf") or []:
            if isinstance(ref, dict) and "$ref" in ref:
                schema = {**resolve(ref["$ref"].rsplit("/", 1)[-1]), **{
                    k: v for k, v in schema.items() if k != "allOf"}}  # fmt: skip
    if not isinstance(schema, dict) or schema.get(PRESERVE):
        return []
    out: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if (root and key in ROOT_KEEP) or key.startswith("$"):
                continue  # "$patch", "$setElementOrder/…": strategic merge patch directives
            if props is not None and key in props:
                out += unknown_fields(item, props[key], resolve, path=where)
            elif isinstance(extra, dict):
                out += unknown_fields(item, extra, resolve, path=where)
            elif not (extra is True or (props is None and extra is None
                                        and schema.get("type") != "object")):  # fmt: skip
                out.append(where)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += unknown_fields(item, schema["items"], resolve, path=f"{path}[{i}]")
    return out


_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
}


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    expected = _TYPES.get(kind)
    return expected is None or isinstance(value, expected)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return {dict: "object", list: "array", str: "string"}.get(type(value), type(value).__name__)


def _fmt(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def validate(value: Any, schema: dict | None, path: str = "") -> list[tuple[str, str]]:
    """Problems as (field path, message) pairs; empty when ``value`` is valid."""
    if not isinstance(schema, dict):
        return []
    where = path or "<root>"
    if value is None:
        if schema.get("nullable"):
            return []
        if schema.get("type"):
            return [
                (
                    where,
                    f'Invalid value: "null": {where} in body must be of type '
                    f'{schema["type"]}: "null"',
                )
            ]
        return []
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, int | str) or isinstance(value, bool):
            return [(where, f"Invalid value: {_fmt(value)}: must be an integer or a string")]
        return []
    kind = schema.get("type")
    if kind and not _type_ok(value, kind):
        return [
            (
                where,
                f'Invalid value: "{_type_name(value)}": {where} in body must be of type '
                f'{kind}: "{_type_name(value)}"',
            )
        ]
    problems: list[tuple[str, str]] = []
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(_fmt(v) for v in schema["enum"])
        problems.append((where, f"Unsupported value: {_fmt(value)}: supported values: {allowed}"))
    if isinstance(value, str):
        problems += _string_problems(value, schema, where)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(
                (
                    where,
                    f"Invalid value: {value}: {where} in body should be greater "
                    f"than or equal to {schema['minimum']}",
                )
            )
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(
                (
                    where,
                    f"Invalid value: {value}: {where} in body should be less "
                    f"than or equal to {schema['maximum']}",
                )
            )
    if isinstance(value, dict):
        for key in schema.get("required") or []:
            if key not in value:
                problems.append((_join(path, key), "Required value"))
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            problems += validate(item, sub, _join(path, key))
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            problems.append(
                (
                    where,
                    f"Invalid value: {len(value)}: {where} in body should have "
                    f"at least {schema['minItems']} items",
                )
            )
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append(
                (where, f"Too many: {len(value)}: must have at most {schema['maxItems']} items")
            )
        for i, item in enumerate(value):
            problems += validate(item, schema.get("items"), f"{where}[{i}]")
    return problems


def _string_problems(value: str, schema: dict, where: str) -> list[tuple[str, str]]:
    out = []
    if "minLength" in schema and len(value) < schema["minLength"]:
        out.append(
            (
                where,
                f'Invalid value: "{value}": {where} in body should be at least '
                f"{schema['minLength']} chars long",
            )
        )
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        out.append((where, f"Too long: may not be more than {schema['maxLength']} bytes"))
    if "pattern" in schema and not re.search(schema["pattern"], value):
        out.append(
            (
                where,
                f"Invalid value: \"{value}\": {where} in body should match '{schema['pattern']}'",
            )
        )
    if schema.get("format") == "date-time":
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            out.append(
                (
                    where,
                    f'Invalid value: "{value}": {where} in body must be of type '
                    f'date-time: "{value}"',
                )
            )
    return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
