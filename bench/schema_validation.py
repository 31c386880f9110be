"""Cost of checking one release v2 payload: busd's checkers against fastjsonschema.

Run: .venv/bin/python bench/schema_validation.py [--n 200000] [--schemas schemas]
Prints ns/message for each variant: the best of 5 runs of ``n`` checks, loop overhead
subtracted. Messages cycle through 5,000 payloads with distinct slugs (as real releases have),
sharing env names and flag (as real services do).

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


def release_v2(i: int) -> dict[str, Any]:
    return {
        "slug": f"https://apps.example/shop/releases/{i}",
        "cmd": "bin/web",
        "env": {"RACK_ENV": "production", "PORT": "5000", "JAVA_OPTS": "-Xmx512m"},
        "flag": "extra_cpu",
    }


def per_message(
    check: Callable[[dict[str, Any]], Any], messages: list[dict[str, Any]], n: int, repeat: int = 5
) -> float:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--schemas", default=str(Path(__file__).parents[1] / "schemas"))
    args = parser.parse_args()

    from busd.kernel.schemas import SchemaGate
    from busd_protocol.schemas import SchemaSet, compile_fast, compile_schema

    schemas = SchemaSet.load(args.schemas)
    document = schemas.document("release", 2)
    own = compile_schema(document, "release v2")
    fast_own = compile_fast(document, "release v2")
    gate = SchemaGate(schemas)
    slow_gate = SchemaGate(schemas)
    valid = [release_v2(i) for i in range(POOL)]
    invalid = [{**m, "env": {**m["env"], "JAVA_OPTS": 512}} for m in valid]
    assert all(own(m) is None for m in valid) and all(own(m) for m in invalid)
    assert all(fast_own(m) for m in valid) and not any(fast_own(m) for m in invalid)

    rows: list[tuple[str, Callable[[dict[str, Any]], Any], list[dict[str, Any]]]] = [
        ("compiled checker, valid", own, valid),
        ("compiled checker, invalid", own, invalid),
        ("generated fast check, valid", fast_own, valid),
        ("generated fast check, invalid", fast_own, invalid),
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
    try:
        import fastjsonschema
    except ImportError:
        print("fastjsonschema not installed: skipped")
    else:
        fast = fastjsonschema.compile(document)

        def fast_check(message: dict[str, Any]) -> None:
            with contextlib.suppress(fastjsonschema.JsonSchemaException):
                fast(message)

        rows += [
            ("fastjsonschema, valid", fast_check, valid),
            ("fastjsonschema, invalid", fast_check, invalid),
        ]
    figures: dict[str, float] = {}
    for label, check, messages in rows:
        figure = per_message(check, messages, args.n)
        figures[label] = figure
        print(f"release v2, {label:38s} {figure:6.0f} ns/message")
    before = figures["SchemaGate, closure path (as before)"]
    after = figures["SchemaGate.check (+ counters)"]
    print(
        f"SchemaGate.check, valid: {before:.0f} -> {after:.0f} ns/message "
        f"({before / after:.2f}x faster)"
    )


if __name__ == "__main__":
    main()
