"""Would a reader of the old schema break on records of the new one? The rule a published schema
version keeps: within one version, a record may only gain what a tolerant reader ignores.

Breaking (the version must be bumped and an upcaster registered): a property removed, a required
property made optional (readers rely on it being there), a type changed or widened, a `const` or
`format` changed, an enum value removed, a payload kind (discriminator value) removed. Not
breaking: a new optional property, a new enum value or payload kind (readers skip what they do
not know: the contract says so), a description changed.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def breaking_changes(old: Schema, new: Schema) -> list[str]:
    """What in `new` breaks a reader written against `old`, each as `path: what`; empty when
    compatible. Local `$ref`s (`#/$defs/...`) are followed in each document."""
    return _compare(old, new, old, new, "$", set())


def _resolve(node: Schema, root: Schema) -> Schema:
    while "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            return node
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
    return node


def _types(node: Schema, root: Schema) -> set[str]:
    """The JSON types a node allows (following `$ref`s and `anyOf`/`oneOf`); empty: any."""
    node = _resolve(node, root)
    kind = node.get("type")
    if isinstance(kind, list):
        return set(kind)
    if kind:
        return {kind}
    options = _options(node)
    types = [_types(option, root) for option in options]
    return set() if not options or any(not t for t in types) else set().union(*types)


def _options(node: Schema) -> list[Schema]:
    options: list[Schema] = node.get("anyOf") or node.get("oneOf") or []
    return options


def _name(option: Schema, index: int) -> str:
    """How a union's branch is matched across versions: its `$ref` target, else its position."""
    ref = option.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else f"#{index}"


def _compare(
    old: Schema, new: Schema, old_root: Schema, new_root: Schema, path: str, seen: set[str]
) -> list[str]:
    key = f"{path}|{old.get('$ref', '')}|{new.get('$ref', '')}"
    if key in seen:
        return []
    seen.add(key)
    old, new = _resolve(old, old_root), _resolve(new, new_root)
    problems: list[str] = []
    old_types, new_types = _types(old, old_root), _types(new, new_root)
    if old_types and not new_types:
        problems.append(f"{path}: type {sorted(old_types)} no longer constrained")
    elif old_types and not new_types <= old_types:
        problems.append(f"{path}: type {sorted(old_types)} became {sorted(new_types)}")
    problems.extend(
        f"{path}: {keyword} {old[keyword]!r} became {new.get(keyword)!r}"
        for keyword in ("const", "format")
        if keyword in old and old.get(keyword) != new.get(keyword)
    )
    if (
        "enum" in old
        and "enum" in new
        and (gone := set(map(str, old["enum"])) - set(map(str, new["enum"])))
    ):
        problems.append(f"{path}: enum values removed: {sorted(gone)}")
    problems += _compare_properties(old, new, old_root, new_root, path, seen)
    problems += _compare_kinds(old, new, old_root, new_root, path, seen)
    problems += _compare_branches(old, new, old_root, new_root, path, seen)
    if "items" in old and "items" in new:
        problems += _compare(old["items"], new["items"], old_root, new_root, f"{path}[]", seen)
    return problems


def _compare_properties(
    old: Schema, new: Schema, old_root: Schema, new_root: Schema, path: str, seen: set[str]
) -> list[str]:
    problems = []
    old_properties, new_properties = old.get("properties", {}), new.get("properties", {})
    for name, old_property in old_properties.items():
        where = f"{path}.{name}"
        if name not in new_properties:
            problems.append(f"{where}: removed")
            continue
        if name in old.get("required", []) and name not in new.get("required", []):
            problems.append(f"{where}: was required, now optional")
        problems += _compare(old_property, new_properties[name], old_root, new_root, where, seen)
    return problems


def _compare_branches(
    old: Schema, new: Schema, old_root: Schema, new_root: Schema, path: str, seen: set[str]
) -> list[str]:
    """A union without a discriminator (an optional model, a record of several shapes): each
    branch a reader knows must stay, compatibly (`null` of an optional field included)."""
    if "discriminator" in old:
        return []
    old_branches = {_name(o, i): o for i, o in enumerate(_options(old))}
    new_branches = {_name(o, i): o for i, o in enumerate(_options(new))}
    problems = []
    for name, branch in old_branches.items():
        if name not in new_branches:
            problems.append(f"{path}: branch {name} removed")
            continue
        problems += _compare(branch, new_branches[name], old_root, new_root, path, seen)
    return problems


def _compare_kinds(
    old: Schema, new: Schema, old_root: Schema, new_root: Schema, path: str, seen: set[str]
) -> list[str]:
    """A discriminated union (payload kinds): each kind a reader knows must stay, compatibly."""
    old_mapping = old.get("discriminator", {}).get("mapping", {})
    new_mapping = new.get("discriminator", {}).get("mapping", {})
    problems = []
    for kind, ref in old_mapping.items():
        if kind not in new_mapping:
            problems.append(f"{path}: kind {kind!r} removed")
            continue
        problems += _compare(
            {"$ref": ref}, {"$ref": new_mapping[kind]}, old_root, new_root, f"{path}<{kind}>", seen
        )
    return problems
