"""Statistics snapshots as plain JSON values, for the control socket's ``stats`` command."""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

from busd_protocol.histogram import HistogramSnapshot


def jsonable(value: Any) -> Any:
    if isinstance(value, HistogramSnapshot):
        return {
            "count": value.total,
            "sum_seconds": value.sum,
            "p50_seconds": _finite(value.quantile(0.5)),
            "p99_seconds": _finite(value.quantile(0.99)),
            "p999_seconds": _finite(value.quantile(0.999)),
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(jsonable(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, float):
        return _finite(value)
    return value


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
