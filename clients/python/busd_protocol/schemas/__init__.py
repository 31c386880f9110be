"""Versioned message schemas: loading, compiling and checking payloads (stdlib only).

busd and clients share this package so both judge a payload identically::

    schemas = SchemaSet.load("schemas")
    verdict = schemas.check("release.shop", "release", 2, data)   # None, or (code, reason)

JSON Schema 2020-12, written here rather than taken from a library: jsonschema-rs was
measured as the judge (docs/schemas.md §2) and is faster only with its own formats and JSON
types, where busd needs its msgpack rules (``integer`` excludes 1.0, NaN is not null, bytes
are not strings) and the same verdict in every client without a compiled dependency.
Modules: values (types, quoting, equality), refs ($ref resolution), compiler (the judge's
closures: types.py, containers.py, applicators.py), codegen (the generated fast check),
formats, loader (files), state (meta.json's keyed-state declaration), schemaset (the compiled
set). See schemas/README.md for the
directory layout and docs/schemas.md for the rules.
"""

from busd_protocol.schemas.codegen import FastCheck, compile_fast
from busd_protocol.schemas.compiler import ANNOTATIONS, ASSERTIONS, MAX_NESTING, compile_schema
from busd_protocol.schemas.formats import FORMATS
from busd_protocol.schemas.loader import (
    STATUSES,
    SchemaLoadError,
    SchemaSource,
    VersionSource,
    metadata_problems,
    read_directory,
    read_json,
)
from busd_protocol.schemas.schemaset import (
    INVALID,
    RETIRED_VERSION,
    SCHEMA_NOT_ALLOWED,
    UNKNOWN_SCHEMA,
    UNKNOWN_VERSION,
    Route,
    SchemaInfo,
    SchemaSet,
    Verdict,
    VersionInfo,
    compile_version,
    fast_version,
)
from busd_protocol.schemas.state import StateEnds, StateRule, parse_state, state_problems
from busd_protocol.schemas.values import (
    DIALECT,
    JSON_TYPES,
    Checker,
    Failure,
    SchemaError,
    json_equal,
    key_segment,
    show,
    type_name,
)

__all__ = [
    "ANNOTATIONS",
    "ASSERTIONS",
    "DIALECT",
    "FORMATS",
    "INVALID",
    "JSON_TYPES",
    "MAX_NESTING",
    "RETIRED_VERSION",
    "SCHEMA_NOT_ALLOWED",
    "STATUSES",
    "UNKNOWN_SCHEMA",
    "UNKNOWN_VERSION",
    "Checker",
    "Failure",
    "FastCheck",
    "Route",
    "SchemaError",
    "SchemaInfo",
    "SchemaLoadError",
    "SchemaSet",
    "SchemaSource",
    "StateEnds",
    "StateRule",
    "Verdict",
    "VersionInfo",
    "VersionSource",
    "compile_fast",
    "compile_schema",
    "compile_version",
    "fast_version",
    "json_equal",
    "key_segment",
    "metadata_problems",
    "parse_state",
    "read_directory",
    "read_json",
    "show",
    "state_problems",
    "type_name",
]
