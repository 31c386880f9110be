"""Keyed state schemas: meta.json's ``state`` declaration (docs/schemas.md §State).

A schema may declare that its messages are *state*: the latest accepted message per key is
kept by busd and served as a snapshot (docs/protocol.md §3.2)::

    "state": {"key": ["app", "instance_id"], "ttl_s": 600,
              "ends": {"field": "state", "values": ["down"]}, "order": "reported_at"}

- ``key``: 1-4 payload field names, each a *required* string or integer property of every
  active and deprecated version;
- ``ttl_s``: optional, a positive number of seconds: an entry not refreshed that long is
  dropped;
- ``ends``: optional: a message whose ``field`` holds one of ``values`` ends its entry (the
  key is removed; the message itself is forwarded live as any other);
- ``order``: optional, a required integer payload field by which a client merges the
  brokers of a pool (newest wins); default: the envelope's ``ts``.

``parse_state`` checks the declaration's shape (``ValueError`` naming the field; the loader
says which meta.json); ``state_problems`` checks it against the version documents. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_KEY_FIELDS", "StateEnds", "StateRule", "parse_state", "state_problems"]

MAX_KEY_FIELDS = 4
_STATE_KEYS = frozenset({"key", "ttl_s", "ends", "order"})
_ENDS_KEYS = frozenset({"field", "values"})
_MAX_ENDS_VALUES = 64
_MAX_TTL_S = 10 * 365 * 86400.0


@dataclass(frozen=True, slots=True)
class StateEnds:
    """A message whose payload ``field`` holds one of ``values`` ends its entry."""

    field: str
    values: frozenset[str | int]


@dataclass(frozen=True, slots=True)
class StateRule:
    """One schema's state declaration, as parsed from its meta.json."""

    key: tuple[str, ...]
    ttl_s: float | None = None
    ends: StateEnds | None = None
    order: str | None = None

    def wire(self) -> dict[str, Any]:
        """The rule as a snapshot's ``end`` frame carries it (docs/protocol.md §3.2)."""
        ends = self.ends
        return {
            "key": list(self.key),
            "ttl_s": self.ttl_s,
            "ends": None
            if ends is None
            else {"field": ends.field, "values": sorted(ends.values, key=repr)},
            "order": self.order,
        }

    @classmethod
    def from_wire(cls, value: Any) -> StateRule:
        """The rule from a snapshot's ``end`` frame; ``ValueError`` if malformed."""
        return parse_state(value)

    def key_of(self, data: Any) -> tuple[Any, ...] | None:
        """The key fields' values of a payload, or None when one is missing."""
        try:
            return tuple(data[name] for name in self.key)
        except (KeyError, TypeError):
            return None

    def is_end(self, data: Any) -> bool:
        """Whether a payload ends its entry (``ends``)."""
        ends = self.ends
        if ends is None or type(data) is not dict:
            return False
        value = data.get(ends.field)
        return (type(value) is str or type(value) is int) and value in ends.values


def _name(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 128


def parse_state(value: Any) -> StateRule:
    """meta.json's ``state`` object as a ``StateRule``; ``ValueError`` naming the field
    otherwise (the loader re-raises it as ``SchemaLoadError`` naming meta.json)."""
    if not isinstance(value, dict):
        raise ValueError('state: expected an object like {"key": ["app", "instance_id"]}')
    unknown = sorted(set(value) - _STATE_KEYS)
    if unknown:
        raise ValueError(
            f"state: unknown key {unknown[0]!r}; expected {', '.join(sorted(_STATE_KEYS))}"
        )
    key = value.get("key")
    if (
        not isinstance(key, list)
        or not 1 <= len(key) <= MAX_KEY_FIELDS
        or not all(_name(k) for k in key)
    ):
        raise ValueError(f"state.key: expected a list of 1 to {MAX_KEY_FIELDS} payload field names")
    if len(set(key)) != len(key):
        raise ValueError("state.key: a field is named twice")
    ttl = value.get("ttl_s")
    if ttl is not None:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= _MAX_TTL_S:
            raise ValueError(f"state.ttl_s: expected a positive number of seconds, got {ttl!r}")
        ttl = float(ttl)
    ends = _parse_ends(value.get("ends"))
    order = value.get("order")
    if order is not None and not _name(order):
        raise ValueError(f"state.order: expected a payload field name, got {order!r}")
    return StateRule(tuple(key), ttl, ends, order)


def _parse_ends(ends: Any) -> StateEnds | None:
    if ends is None:
        return None
    shape = 'state.ends: expected an object like {"field": "state", "values": ["down"]}'
    if not isinstance(ends, dict) or set(ends) != _ENDS_KEYS:
        raise ValueError(shape)
    field, values = ends["field"], ends["values"]
    if not _name(field):
        raise ValueError("state.ends.field: expected a payload field name")
    if (
        not isinstance(values, list)
        or not 1 <= len(values) <= _MAX_ENDS_VALUES
        or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values)
    ):
        raise ValueError(
            f"state.ends.values: expected a list of 1 to {_MAX_ENDS_VALUES} strings or integers",
        )
    return StateEnds(field, frozenset(values))


def _property(document: Any, name: str) -> tuple[dict[str, Any] | None, bool]:
    """(the property's schema, whether it is required) in a version document."""
    if not isinstance(document, dict):
        return None, False
    props = document.get("properties")
    prop = props.get(name) if isinstance(props, dict) else None
    required = document.get("required")
    is_required = isinstance(required, list) and name in required
    return (prop if isinstance(prop, dict) else None), is_required


def _types(prop: dict[str, Any]) -> set[str]:
    kind = prop.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    return set()


def state_problems(
    rule: StateRule, meta_path: str, versions: dict[int, tuple[str, str, Any]]
) -> list[tuple[str, str]]:
    """(file, reason) for each way ``rule`` does not fit a version document; ``versions`` maps
    each *active or deprecated* version number to (status, path, document). Retired versions
    are not published, so they need not carry the key."""
    problems: list[tuple[str, str]] = []
    if not versions:
        problems.append((meta_path, "state: no active or deprecated version carries the key"))
    for number, (_status, path, document) in versions.items():
        label = f"state: v{number}"
        for name in rule.key:
            prop, required = _property(document, name)
            if prop is None or not required:
                problems.append((path, f"{label}: key field {name!r} must be a required property"))
            elif not _types(prop) or not _types(prop) <= {"string", "integer"}:
                problems.append(
                    (path, f"{label}: key field {name!r} must be of type string or integer")
                )
        if rule.ends is not None:
            prop, _required = _property(document, rule.ends.field)
            if prop is None:
                problems.append(
                    (path, f"{label}: ends field {rule.ends.field!r} is not a property")
                )
            elif isinstance(prop.get("enum"), list):
                outside = sorted((v for v in rule.ends.values if v not in prop["enum"]), key=repr)
                if outside:
                    problems.append(
                        (
                            path,
                            f"{label}: ends value {outside[0]!r} is not in the enum of "
                            f"{rule.ends.field!r}",
                        )
                    )
        if rule.order is not None:
            prop, required = _property(document, rule.order)
            if prop is None or not required or _types(prop) != {"integer"}:
                problems.append(
                    (
                        path,
                        f"{label}: order field {rule.order!r} must be a required property "
                        "of type integer",
                    )
                )
    return problems
