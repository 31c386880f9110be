"""Cost of checking one payload: busd's checkers against other JSON Schema validators.

Run: .venv/bin/python bench/schema_validation.py [--n 200000] [--schemas schemas]
Prints ns/message for each variant: the best of 5 runs of ``n`` checks, loop overhead
subtracted. Messages cycle through 5,000 payloads with distinct slugs (as real releases have),
sharing env names and flag (as real services do).

Two schemas: the shipped release v2, and ``deploy`` (below), a tagged union written as people
write one: ``$defs``, ``$ref`` and a ``oneOf`` of two ``const``-tagged objects. Each is
measured, in the same run, with busd's generated fast check and closure checker, and with
fastjsonschema, jsonschema (the reference implementation; fewer checks, it is slow) and
jsonschema-rs where installed (bench/requirements.txt). jsonschema-rs is run twice: with
its own formats, and with busd's format predicates (what it would take to give busd's
verdicts; its "integer" still accepts 1.0 and it reads NaN as null, see docs/schemas.md).

"closure path" rows are the accept path before the generated fast check existed (the closure
checker behind every layer), measured in the same run so the ratio is like for like.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

POOL = 5000  # more than the checker remembers (1,024 strings): slugs always miss
Check = Callable[[dict[str, Any]], Any]

DEPLOY: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "deploy v1 (bench only)",
    "type": "object",
    "$defs": {
        "env": {
            "type": "object",
            "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "maxLength": 256},
            "additionalProperties": {"type": "string", "maxLength": 32768},
        },
        "release": {
            "type": "object",
            "properties": {
                "kind": {"const": "release"},
                "slug": {"type": "string", "format": "uri", "maxLength": 2048},
                "env": {"$ref": "#/$defs/env"},
            },
            "required": ["kind", "slug", "env"],
            "additionalProperties": False,
        },
        "rollback": {
            "type": "object",
            "properties": {
                "kind": {"const": "rollback"},
                "to": {"type": "integer", "minimum": 1},
            },
            "required": ["kind", "to"],
            "additionalProperties": False,
        },
    },
    "properties": {
        "app": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$", "maxLength": 64},
        "change": {"oneOf": [{"$ref": "#/$defs/release"}, {"$ref": "#/$defs/rollback"}]},
    },
    "required": ["app", "change"],
    "additionalProperties": False,
}


def release_v2(i: int) -> dict[str, Any]:
    return {
        "slug": f"https://apps.example/shop/releases/{i}",
        "cmd": "bin/web",
        "env": {"RACK_ENV": "production", "PORT": "5000", "JAVA_OPTS": "-Xmx512m"},
        "flag": "extra_cpu",
    }


def deploy(i: int) -> dict[str, Any]:
    if i % 4 == 3:
        return {"app": "shop", "change": {"kind": "rollback", "to": i}}
    release = release_v2(i)
    return {
        "app": "shop",
        "change": {"kind": "release", "slug": release["slug"], "env": release["env"]},
    }


def per_message(check: Check, messages: list[dict[str, Any]], n: int, repeat: int = 5) -> float:
    """Best ns per check over ``repeat`` runs of ``n`` checks, loop overhead subtracted."""
    rounds = max(1, n // len(messages))
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(rounds):
            for message in messages:
                check(message)
        elapsed = time.perf_counter_ns() - start
        start = time.perf_counter_ns()
        for _ in range(rounds):
            for _message in messages:
                pass
        overhead = time.perf_counter_ns() - start
        best = min(best, (elapsed - overhead) / (rounds * len(messages)))
    return best


def peers(document: dict[str, Any]) -> list[tuple[str, Check, int]]:
    """(label, is-valid check, divisor of n) for each installed peer validator."""
    found: list[tuple[str, Check, int]] = []
    try:
        import fastjsonschema
    except ImportError:
        print("fastjsonschema not installed: skipped")
    else:
        compiled = fastjsonschema.compile(document)

        def fast_check(message: dict[str, Any]) -> None:
            with contextlib.suppress(fastjsonschema.JsonSchemaException):
                compiled(message)

        found.append(("fastjsonschema", fast_check, 1))
    try:
        import jsonschema
    except ImportError:
        print("jsonschema not installed: skipped")
    else:
        cls = jsonschema.Draft202012Validator
        validator = cls(document, format_checker=cls.FORMAT_CHECKER)
        found.append(("jsonschema (reference)", validator.is_valid, 40))
    try:
        import jsonschema_rs
    except ImportError:
        print("jsonschema-rs not installed: skipped")
    else:
        from busd_protocol.schemas import FORMATS

        own_formats = jsonschema_rs.validator_for(document, validate_formats=True)
        busd_formats = jsonschema_rs.validator_for(
            document,
            validate_formats=True,
            formats={name: accepts for name, (accepts, _) in FORMATS.items()},
        )
        found += [
            ("jsonschema-rs, its formats", own_formats.is_valid, 1),
            ("jsonschema-rs, busd's formats", busd_formats.is_valid, 1),
        ]
    return found


def compare(
    name: str, document: dict[str, Any], valid: list[dict[str, Any]], n: int
) -> dict[str, float]:
    """busd's two checkers and the peers on valid and invalid payloads of one schema."""
    from busd_protocol.schemas import compile_fast, compile_schema

    own = compile_schema(document, name)
    fast = compile_fast(document, name)
    invalid = [_spoil(m) for m in valid]
    assert all(own(m) is None for m in valid) and all(own(m) for m in invalid)
    assert all(fast(m) for m in valid) and not any(fast(m) for m in invalid)
    rows: list[tuple[str, Check, int]] = [
        ("busd generated fast check", fast, 1),
        ("busd closure checker (the judge)", own, 1),
        *peers(document),
    ]
    figures: dict[str, float] = {}
    for label, check, divisor in rows:
        for kind, messages in (("valid", valid), ("invalid", invalid)):
            figure = per_message(check, messages, max(len(messages), n // divisor))
            figures[f"{label}, {kind}"] = figure
            print(f"{name}, {label + ', ' + kind:42s} {figure:7.0f} ns/message", flush=True)
    return figures


def _spoil(message: dict[str, Any]) -> dict[str, Any]:
    """The same payload with one env value an int (or, for a rollback, ``to`` a string)."""
    if "change" in message:
        change = message["change"]
        if change["kind"] == "rollback":
            return {**message, "change": {**change, "to": str(change["to"])}}
        return {**message, "change": {**change, "env": {**change["env"], "JAVA_OPTS": 512}}}
    return {**message, "env": {**message["env"], "JAVA_OPTS": 512}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--schemas", default=str(Path(__file__).parents[1] / "schemas"))
    args = parser.parse_args()

    from busd.kernel.schemas import SchemaGate
    from busd_protocol.schemas import SchemaSet

    schemas = SchemaSet.load(args.schemas)
    gate = SchemaGate(schemas)
    slow_gate = SchemaGate(schemas)
    valid = [release_v2(i) for i in range(POOL)]
    invalid = [_spoil(m) for m in valid]
    rows: list[tuple[str, Check, list[dict[str, Any]]]] = [
        (
            "SchemaSet.explain (closure path)",
            lambda m: schemas.explain("release.shop", "release", 2, m),
            valid,
        ),
        (
            "SchemaSet.check (+ lookup, topic)",
            lambda m: schemas.check("release.shop", "release", 2, m),
            valid,
        ),
        (
            "SchemaGate, closure path (as before)",
            lambda m: slow_gate._check_slowly("release.shop", "release", 2, m, "deployer"),
            valid,
        ),
        (
            "SchemaGate.check (+ counters)",
            lambda m: gate.check("release.shop", "release", 2, m, "deployer"),
            valid,
        ),
        (
            "SchemaGate.check, invalid",
            lambda m: gate.check("release.shop", "release", 2, m, "deployer"),
            invalid,
        ),
    ]
    figures: dict[str, float] = {}
    for label, check, messages in rows:
        figure = per_message(check, messages, args.n)
        figures[label] = figure
        print(f"release v2, {label:42s} {figure:7.0f} ns/message", flush=True)
    before = figures["SchemaGate, closure path (as before)"]
    after = figures["SchemaGate.check (+ counters)"]
    print(
        f"SchemaGate.check, valid: {before:.0f} -> {after:.0f} ns/message "
        f"({before / after:.2f}x faster)"
    )
    release = compare("release v2", schemas.document("release", 2), valid, args.n)
    union = compare("deploy ($ref + oneOf)", DEPLOY, [deploy(i) for i in range(POOL)], args.n)
    for name, got in (("release v2", release), ("deploy ($ref + oneOf)", union)):
        ours = got["busd generated fast check, valid"]
        for peer in ("fastjsonschema", "jsonschema (reference)", "jsonschema-rs, its formats"):
            if f"{peer}, valid" in got:
                print(
                    f"{name}: {peer} / busd fast check, valid: {got[f'{peer}, valid'] / ours:.2f}x"
                )


if __name__ == "__main__":
    main()
