"""Where a ``$ref`` points: base URIs, ``$id`` resources, ``$anchor`` names, JSON pointers.

Only references inside the one document are resolved (a schema file must judge alone; busd
never fetches anything): ``#/$defs/x``, ``#name`` (an ``$anchor``), ``#`` (the root), and any
URI that resolves against the document's base URIs to a resource it embeds with ``$id``. A
reference to anything else is refused at load with its JSON pointer.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from busd_protocol.schemas.values import SchemaError

# The base URI of a document without "$id": a name no real reference can collide with.
ROOT_BASE = "busd:/schema.json"
# Keywords whose value is one schema, a list of schemas, or a map of names to schemas.
ONE_SCHEMA = frozenset(
    {
        "additionalProperties",
        "propertyNames",
        "items",
        "contains",
        "not",
        "if",
        "then",
        "else",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)
SCHEMA_LIST = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
SCHEMA_MAP = frozenset({"properties", "patternProperties", "$defs", "dependentSchemas"})
# Subschemas that judge the same value as their parent (no descent into an item or field):
# a reference cycle through these only would never end, whatever the value.
IN_PLACE = frozenset({"allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas"})


def escape(name: str) -> str:
    """A JSON pointer token for ``name``."""
    return name.replace("~", "~0").replace("/", "~1")


def resolve(base: str, reference: str) -> str:
    """RFC 3986 section 5.2 reference resolution, for any scheme (urllib's urljoin only
    resolves against schemes it knows, which leaves ``urn:`` bases unresolved)."""
    r = urlsplit(reference)
    if r.scheme:
        return urlunsplit((r.scheme, r.netloc, _remove_dots(r.path), r.query, r.fragment))
    b = urlsplit(base)
    if r.netloc:
        netloc, path, query = r.netloc, _remove_dots(r.path), r.query
    else:
        netloc = b.netloc
        if not r.path:
            path, query = b.path, r.query if r.query else b.query
        else:
            if r.path.startswith("/"):
                path = _remove_dots(r.path)
            elif b.netloc and not b.path:
                path = _remove_dots("/" + r.path)
            else:
                path = _remove_dots(b.path[: b.path.rfind("/") + 1] + r.path)
            query = r.query
    # urlunsplit drops an empty "?" or "#"; neither matters for finding a resource.
    return urlunsplit((b.scheme, netloc, path, query, r.fragment))


def _remove_dots(path: str) -> str:
    output: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if len(output) > 1:
                output.pop()
        elif segment != ".":
            output.append(segment)
    if path.endswith(("/.", "/..")):
        output.append("")
    return "/".join(output)


def split_fragment(uri: str) -> tuple[str, str]:
    head, _, fragment = uri.partition("#")
    return head, unquote(fragment)


class Index:
    """Every schema object of one document: its base URI and pointer, resources and anchors.

    Only the keywords the compiler knows are walked; a subschema under any other keyword is
    refused by the compiler anyway before it could be referenced.
    """

    def __init__(self, document: object) -> None:
        self.base: dict[int, str] = {}  # id(schema object) -> base URI
        self.pointer: dict[int, str] = {}  # id(schema object) -> pointer in the document
        self.resources: dict[str, object] = {}  # absolute URI (no fragment) -> schema
        self.anchors: dict[str, object] = {}  # "uri#name" -> schema
        self._walk(document, ROOT_BASE, "")

    def _walk(self, node: object, base: str, pointer: str) -> None:
        if not isinstance(node, dict):
            return
        own = node.get("$id")
        if isinstance(own, str):
            uri, fragment = split_fragment(resolve(base, own))
            if fragment:
                raise SchemaError(pointer + "/$id", "$id must not have a fragment")
            base = uri
        if own is not None or not pointer:
            self.resources.setdefault(base, node)
        anchor = node.get("$anchor")
        if isinstance(anchor, str):
            self.anchors.setdefault(f"{base}#{anchor}", node)
        self.base[id(node)] = base
        self.pointer[id(node)] = pointer
        for key, value in node.items():
            at = f"{pointer}/{escape(key)}"
            if key in ONE_SCHEMA:
                self._walk(value, base, at)
            elif key in SCHEMA_LIST and isinstance(value, list):
                for index, item in enumerate(value):
                    self._walk(item, base, f"{at}/{index}")
            elif key in SCHEMA_MAP and isinstance(value, dict):
                for name, item in value.items():
                    self._walk(item, base, f"{at}/{escape(name)}")

    def target(self, node: dict[str, Any], pointer: str) -> object:
        """The schema ``node``'s ``$ref`` names; ``SchemaError`` at ``pointer`` if it is not
        in this document."""
        reference = node["$ref"]
        if not isinstance(reference, str):
            raise SchemaError(pointer + "/$ref", "expected a string")
        uri, fragment = split_fragment(resolve(self.base[id(node)], reference))
        root = self.resources.get(uri)
        if root is None:
            raise SchemaError(
                pointer + "/$ref",
                f"cannot resolve {reference!r}: only references within the file are supported",
            )
        if not fragment:
            return root
        if not fragment.startswith("/"):
            found = self.anchors.get(f"{uri}#{fragment}")
            if found is None:
                raise SchemaError(pointer + "/$ref", f"no $anchor {fragment!r} in {uri!r}")
            return found
        target: object = root
        for raw in fragment[1:].split("/"):
            token = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and token in target:
                target = target[token]
            elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
                target = target[int(token)]
            else:
                raise SchemaError(pointer + "/$ref", f"{reference!r} points at nothing")
        if not isinstance(target, dict | bool):
            raise SchemaError(pointer + "/$ref", f"{reference!r} does not point at a schema")
        if isinstance(target, dict) and id(target) not in self.base:
            raise SchemaError(pointer + "/$ref", f"{reference!r} points inside a non-schema")
        return target
