"""A small structural validator for the OpenAPI v3 subset the chart's CRDs use, and a
dict that records which keys a parser asks for.

The validator is strict where the API server prunes: an unknown field is an error, so a
manifest the parser reads but the schema does not describe fails loudly. CEL rules
(`x-kubernetes-validations`) are not evaluated; tests that need them say so.
"""

from __future__ import annotations

import re
from typing import Any

Schema = dict[str, Any]


def _type_ok(value: Any, schema: Schema) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
    want = schema.get("type")
    if want is None:
        return True
    checks: dict[str, tuple[type, ...]] = {
        "object": (dict,),
        "array": (list,),
        "string": (str,),
        "boolean": (bool,),
        "integer": (int,),
        "number": (int, float),
    }
    if want not in checks:
        raise ValueError(f"validator does not know type {want!r}")
    if want in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, checks[want])


def validate(value: Any, schema: Schema, path: str = "") -> list[str]:
    """Every way `value` breaks `schema`, as `<path>: <message>` lines."""
    at = path or "<root>"
    if value is None:
        return [f"{at}: must not be null"]
    if not _type_ok(value, schema):
        return [f"{at}: must be {schema.get('type', 'int-or-string')}, got {value!r}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{at}: must be one of {schema['enum']}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{at}: must be >= {schema['minimum']}, got {value}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{at}: must be <= {schema['maximum']}, got {value}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{at}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{at}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{at}: does not match {schema['pattern']!r}: {value!r}")
    if isinstance(value, dict):
        errors += _validate_object(value, schema, path)
    if isinstance(value, list):
        errors += _validate_array(value, schema, path)
    return errors


def _validate_object(value: dict[str, Any], schema: Schema, path: str) -> list[str]:
    errors: list[str] = []
    props: dict[str, Schema] = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    for name in schema.get("required", []):
        if name not in value:
            errors.append(f"{path + '.' if path else ''}{name}: required")
    for k, v in value.items():
        sub = f"{path}.{k}" if path else str(k)
        if k in props:
            errors += validate(v, props[k], sub)
        elif isinstance(extra, dict):
            errors += validate(v, extra, sub)
        elif props and not schema.get("x-kubernetes-preserve-unknown-fields"):
            errors.append(f"{sub}: unknown field")
    return errors


def _validate_array(value: list[Any], schema: Schema, path: str) -> list[str]:
    errors: list[str] = []
    at = path or "<root>"
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(f"{at}: must have at least {schema['minItems']} items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{at}: must have at most {schema['maxItems']} items")
    items = schema.get("items", {})
    for n, item in enumerate(value):
        errors += validate(item, items, f"{path}[{n}]")
    if schema.get("x-kubernetes-list-type") == "map":
        keys = schema["x-kubernetes-list-map-keys"]
        seen: set[tuple[Any, ...]] = set()
        for n, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            ident = tuple(item.get(k, items.get("properties", {}).get(k, {}).get("default"))
                          for k in keys)
            if ident in seen:
                errors.append(f"{path}[{n}]: duplicate entry for key {ident}")
            seen.add(ident)
    return errors


def schema_at(schema: Schema, path: tuple[str, ...]) -> Schema | None:
    """The sub-schema for a field path (`[]` for list items); None if it is not described."""
    node: Schema | None = schema
    for part in path:
        if node is None:
            return None
        if part == "[]":
            node = node.get("items")
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return node


class Recording(dict[str, Any]):
    """A dict that records every key looked up in it (present or not), by field path.

    Nested dicts and lists are wrapped on the way in, so a parser walking the document
    leaves a trace of every field it reads.
    """

    def __init__(self, data: dict[str, Any], path: tuple[str, ...], log: set[tuple[str, ...]]):
        super().__init__({k: wrap(v, (*path, str(k)), log) for k, v in data.items()})
        self._path = path
        self._log = log

    def get(self, key: str, default: Any = None) -> Any:
        self._log.add((*self._path, key))
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self._log.add((*self._path, key))
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._log.add((*self._path, str(key)))
        return super().__contains__(key)


def wrap(value: Any, path: tuple[str, ...], log: set[tuple[str, ...]]) -> Any:
    if isinstance(value, dict):
        return Recording(value, path, log)
    if isinstance(value, list):
        return [wrap(v, (*path, "[]"), log) for v in value]
    return value


def leaf_paths(value: Any, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every field path set in a document (`[]` for list items)."""
    out: set[tuple[str, ...]] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            out.add((*path, str(k)))
            out |= leaf_paths(v, (*path, str(k)))
    elif isinstance(value, list):
        for v in value:
            out |= leaf_paths(v, (*path, "[]"))
    return out
