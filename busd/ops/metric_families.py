"""Every Prometheus family busd exports, declared once: name, type, unit, help and labels, with
the function that reads its samples from one ``Statistics`` snapshot.

``FAMILIES`` is the whole catalogue (docs/operations.md §2 lists the same rows, and a test
holds both to it). A family whose section is not running (``None`` in ``Statistics``) reads
``None`` and is left out of the scrape; a family with no samples yet (no assertion evaluated,
no schema rejection) is still declared.

Names follow Prometheus conventions: ``busd_`` prefix, counters end ``_total``, base units
(seconds, bytes) in the name. Label values are bounded by construction: rejection codes,
roles, supervised task names, loaded schema names and versions, operator-defined rate keys
and assertion names; never a topic or a publisher.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

from busd.kernel.buckets import BucketRow
from busd.ops.build import BUILD_LABELS, versions
from busd.statistics import (
    AssertionStatistics,
    ConnectionStatistics,
    ControlStatistics,
    HttpStatistics,
    NotifyStatistics,
    RatesStatistics,
    SchemasStatistics,
    Statistics,
    TrustStatistics,
    ZapStatistics,
)
from busd_protocol.codes import Code
from busd_protocol.histogram import HistogramSnapshot

Labels = tuple[str, ...]
Samples = Iterable[tuple[Labels, float | HistogramSnapshot]]
_S = TypeVar("_S")


@dataclass(frozen=True, slots=True)
class Scrape:
    """What one scrape reads: the statistics snapshot and whether ``/readyz`` answers 200."""

    stats: Statistics
    ready: bool


@dataclass(frozen=True, slots=True)
class Family:
    name: str  # as exposed; a counter's ends _total, an info's _info
    type: Literal["counter", "gauge", "histogram", "info"]
    help: str
    read: Callable[[Scrape], Samples | None]  # None: the family's section is not running
    labels: Labels = ()
    unit: str = ""  # "seconds" or "bytes" when the name carries one


def _core(value: Callable[[Statistics], float]) -> Callable[[Scrape], Samples]:
    return lambda s: [((), float(value(s.stats)))]


def _section(
    section: Callable[[Statistics], _S | None], samples: Callable[[_S], Samples]
) -> Callable[[Scrape], Samples | None]:
    """Samples of an optional section; None (the family is left out) while it is absent."""

    def read(s: Scrape) -> Samples | None:
        found = section(s.stats)
        return None if found is None else samples(found)

    return read


def _rates(value: Callable[[RatesStatistics], float]) -> Callable[[Scrape], Samples | None]:
    return _section(lambda st: st.rates, lambda r: [((), float(value(r)))])


def _schemas(value: Callable[[SchemasStatistics], float]) -> Callable[[Scrape], Samples | None]:
    return _section(lambda st: st.schemas, lambda sc: [((), float(value(sc)))])


def _control(value: Callable[[ControlStatistics], float]) -> Callable[[Scrape], Samples | None]:
    return _section(lambda st: st.control, lambda c: [((), float(value(c)))])


def _http(value: Callable[[HttpStatistics], float]) -> Callable[[Scrape], Samples | None]:
    return _section(lambda st: st.http, lambda h: [((), float(value(h)))])


def _systemd(value: Callable[[NotifyStatistics], float]) -> Callable[[Scrape], Samples | None]:
    return _section(lambda st: st.systemd, lambda n: [((), float(value(n)))])


def _zap(value: Callable[[ZapStatistics], float]) -> Callable[[Scrape], Samples | None]:
    return _section(lambda st: st.zap, lambda z: [((), float(value(z)))])


def _trust(value: Callable[[TrustStatistics], float]) -> Callable[[Scrape], Samples | None]:
    return _section(lambda st: st.trust, lambda t: [((), float(value(t)))])


def _per_key(value: Callable[[BucketRow], float]) -> Callable[[Scrape], Samples | None]:
    return _section(
        lambda st: st.rate_keys, lambda rows: [((r.key,), float(value(r))) for r in rows]
    )


def _roles(value: Callable[[ConnectionStatistics], float]) -> Callable[[Scrape], Samples]:
    return lambda s: [
        (("publisher",), float(value(s.stats.ingress))),
        (("subscriber",), float(value(s.stats.egress))),
    ]


def _rejected(st: Statistics) -> Samples:
    counts = st.broker.rejected
    return [((str(code),), float(counts.get(code, 0))) for code in Code]


def _build(_: Scrape) -> Samples:
    v = versions()
    return [(tuple(v[name] for name in BUILD_LABELS), 1.0)]


def _versions(sc: SchemasStatistics) -> list[tuple[str, int, int, Mapping[str, int]]]:
    """(schema, version, accepted, rejected by code) of every version, loaded or not."""
    gate = sc.gate
    out = [(s.name, v.version, v.accepted, v.rejected) for s in gate.schemas for v in s.versions]
    return out + [(u.name, u.version, u.accepted, u.rejected) for u in gate.unloaded]


def _schema_accepted(sc: SchemasStatistics) -> Samples:
    return [((name, str(version)), float(n)) for name, version, n, _ in _versions(sc)]


def _schema_rejected(sc: SchemasStatistics) -> Samples:
    return [
        ((name, str(version), code), float(n))
        for name, version, _, rejected in _versions(sc)
        for code, n in sorted(rejected.items())
    ]


def _assertions(
    value: Callable[[AssertionStatistics], float | None],
) -> Callable[[Scrape], Samples | None]:
    def samples(states: Mapping[str, AssertionStatistics]) -> Samples:
        values = ((name, value(state)) for name, state in sorted(states.items()))
        return [((name,), v) for name, v in values if v is not None]

    return _section(lambda st: st.assertions, samples)


def _restarts(s: Scrape) -> Samples:
    return [((task,), float(n)) for task, n in sorted(s.stats.restarts.items())]


def _schema_status(sc: SchemasStatistics) -> Samples:
    gate = sc.gate
    return [((s.name, str(v.version), v.status), 1.0) for s in gate.schemas for v in s.versions]


def _schema_unknown(sc: SchemasStatistics) -> Samples:
    return [((code,), float(n)) for code, n in sorted(sc.gate.unknown.items())]


# The catalogue, laid out by hand as a table: name and type, help, reader, labels and unit.
# fmt: off
FAMILIES: tuple[Family, ...] = (
    # -- the broker ------------------------------------------------------------------------
    Family("busd_messages_received_total", "counter",
           "Messages read from publishers (every one is answered).",
           _core(lambda st: st.broker.received)),
    Family("busd_messages_accepted_total", "counter",
           "Messages accepted: checked and forwarded to subscribers.",
           _core(lambda st: st.broker.accepted)),
    Family("busd_messages_rejected_total", "counter",
           "Messages rejected, by stable rejection code.",
           lambda s: _rejected(s.stats), ("code",)),
    Family("busd_received_bytes_total", "counter",
           "Envelope bytes of messages read with a readable header.",
           _core(lambda st: st.broker.bytes_in), unit="bytes"),
    Family("busd_accepted_bytes_total", "counter",
           "Envelope bytes of accepted messages (forwarded once to libzmq's fan-out).",
           _core(lambda st: st.broker.bytes_accepted), unit="bytes"),
    Family("busd_replies_sent_total", "counter", "Reply frames sent to publishers.",
           _core(lambda st: st.broker.replies_sent)),
    Family("busd_replies_dropped_total", "counter",
           "Replies dropped: publisher gone or not reading its replies (at reply_hwm).",
           _core(lambda st: st.broker.replies_dropped)),
    Family("busd_publishers_cut_total", "counter",
           "Publisher connections closed for not reading their replies.",
           _core(lambda st: st.broker.publishers_cut)),
    Family("busd_frames_discarded_total", "counter",
           "Frames past the 1 + 2 * max_batch a publish may have, read and dropped "
           "(every seq it could have meant is bad_frame).",
           _core(lambda st: st.broker.frames_discarded)),
    Family("busd_overlong_messages_total", "counter",
           "Messages with more than frame_slice frames, discarded over several wake-ups.",
           _core(lambda st: st.broker.overlong_messages)),
    Family("busd_batches_total", "counter", "Broker wake-ups that handled at least one message.",
           _core(lambda st: st.broker.batches)),
    Family("busd_processing_latency_seconds", "histogram",
           "Time from reading a message to handing it to subscribers (per batch, an upper bound "
           "per message).",
           lambda s: [((), s.stats.broker.latency)], unit="seconds"),
    Family("busd_active_subscriptions", "gauge",
           "Distinct topic prefixes applied for at least one subscriber connection.",
           _core(lambda st: st.broker.subscriptions)),
    Family("busd_subscribe_requests_total", "counter",
           "Subscription messages read from the XPUB socket.",
           _core(lambda st: st.broker.subscribe_total)),
    Family("busd_unsubscribe_requests_total", "counter",
           "Unsubscription messages read from the XPUB socket.",
           _core(lambda st: st.broker.unsubscribe_total)),
    Family("busd_subscriptions_denied_total", "counter",
           "Subscription requests denied, never applied: over max_subscriptions on one "
           "connection, or a prefix longer than any topic.",
           _core(lambda st: st.broker.subscriptions_denied)),
    Family("busd_subscriptions_forbidden_total", "counter",
           "Subscription requests denied by the permissions file (authentication on); "
           "also counted in busd_subscriptions_denied_total.",
           _core(lambda st: st.broker.subscriptions_forbidden)),
    Family("busd_subscribers_cut_total", "counter",
           "Subscriber connections closed for holding too many denied prefixes.",
           _core(lambda st: st.broker.subscribers_cut)),
    Family("busd_sequence_topics", "gauge",
           "Topics whose delivery sequence number busd holds now (bounded; idle ones expire).",
           _core(lambda st: st.broker.sequence_topics)),
    Family("busd_sequence_topics_expired_total", "counter",
           "Topics whose sequence number busd forgot (idle, or past the cap): their next "
           "message starts again at 1.",
           _core(lambda st: st.broker.sequence_topics_expired)),
    Family("busd_order_fences", "gauge",
           "Publisher connection and topic pairs held back behind a refused message now.",
           _core(lambda st: st.broker.fences)),
    Family("busd_order_fenced_total", "counter",
           "Messages refused because an earlier refused message of their topic and "
           "connection had not come back yet (counted under its code too).",
           _core(lambda st: st.broker.fenced)),
    # -- connections -----------------------------------------------------------------------
    Family("busd_publishers_connected", "gauge", "Open publisher (ingress) connections.",
           _core(lambda st: st.ingress.connected)),
    Family("busd_subscribers_connected", "gauge", "Open subscriber (egress) connections.",
           _core(lambda st: st.egress.connected)),
    Family("busd_connections_accepted_total", "counter", "Connections accepted, by role.",
           _roles(lambda c: c.accepted), ("role",)),
    Family("busd_disconnections_total", "counter", "Connections closed, by role.",
           _roles(lambda c: c.disconnected), ("role",)),
    Family("busd_handshake_failures_total", "counter",
           "Connections that failed the ZMTP handshake, by role.",
           _roles(lambda c: c.handshake_failures), ("role",)),
    Family("busd_accept_failures_total", "counter",
           "Connections libzmq could not accept (EMFILE: the file descriptor limit), by role.",
           _roles(lambda c: c.accept_failures), ("role",)),
    # -- the process -----------------------------------------------------------------------
    Family("busd_task_restarts_total", "counter",
           "Restarts of supervised peripheral tasks, by task.",
           _restarts, ("task",)),
    Family("busd_draining", "gauge", "1 while busd drains for shutdown.",
           _core(lambda st: st.draining)),
    Family("busd_ready", "gauge", "1 when /readyz answers 200.",
           lambda s: [((), 1.0 if s.ready else 0.0)]),
    Family("busd_build_info", "info", "busd build information and the versions it runs with.",
           _build, BUILD_LABELS),
    # -- assertions ------------------------------------------------------------------------
    Family("busd_assertion_ok", "gauge",
           "1 while the named service-level assertion holds, 0 while violated.",
           _assertions(lambda a: None if a.ok is None else float(a.ok)), ("name",)),
    Family("busd_assertion_critical", "gauge", "1 when the named assertion gates /readyz.",
           _assertions(lambda a: float(a.critical)), ("name",)),
    Family("busd_assertion_violations_total", "counter",
           "Times the named assertion went from holding to violated.",
           _assertions(lambda a: float(a.violations)), ("name",)),
    # -- rate limits -----------------------------------------------------------------------
    Family("busd_rate_key_throttled_total", "counter",
           "Messages refused rate_limited, by the rate key that refused them.",
           _per_key(lambda r: r.throttled_total), ("key",)),
    Family("busd_rate_key_disabled_total", "counter",
           "Messages refused disabled (rate 0), by rate key.",
           _per_key(lambda r: r.disabled_total), ("key",)),
    Family("busd_rate_limit_messages_per_second", "gauge", "Configured rate limit, by rate key.",
           _per_key(lambda r: r.rate), ("key",)),
    Family("busd_rate_limit_burst_messages", "gauge", "Configured bucket size, by rate key.",
           _per_key(lambda r: r.burst), ("key",)),
    Family("busd_rate_tokens", "gauge", "Tokens in the bucket at scrape time, by rate key.",
           _per_key(lambda r: r.tokens), ("key",)),
    Family("busd_rate_throttled_total", "counter",
           "Messages refused rate_limited, over all rate keys.",
           _rates(lambda r: r.throttled_total)),
    Family("busd_rate_disabled_total", "counter", "Messages refused disabled, over all rate keys.",
           _rates(lambda r: r.disabled_total)),
    Family("busd_rate_keys", "gauge", "Rate keys configured.",
           _rates(lambda r: r.keys)),
    Family("busd_rates_dir_scans_total", "counter", "Scans of the rates directory.",
           _rates(lambda r: r.directory.scans_total)),
    Family("busd_rates_dir_changes_total", "counter",
           "Rate limit changes applied from the rates directory.",
           _rates(lambda r: r.directory.changes_total)),
    Family("busd_rates_dir_errors_total", "counter",
           "Problems with the rates directory or its files, each counted when first seen.",
           _rates(lambda r: r.directory.errors_total)),
    Family("busd_rates_dir_files_in_error", "gauge",
           "Rate files (or the directory) currently refused.",
           _rates(lambda r: r.directory.files_in_error)),
    # -- schemas ---------------------------------------------------------------------------
    Family("busd_schema_messages_accepted_total", "counter",
           "Messages accepted, by schema and version.",
           _section(lambda st: st.schemas, _schema_accepted), ("schema", "version")),
    Family("busd_schema_messages_rejected_total", "counter",
           "Messages of a known schema version rejected, by schema, version and code.",
           _section(lambda st: st.schemas, _schema_rejected), ("schema", "version", "code")),
    Family("busd_schema_version_status", "gauge",
           "1 for each loaded schema version, labelled with its status.",
           _section(lambda st: st.schemas, _schema_status), ("schema", "version", "status")),
    Family("busd_schema_unknown_total", "counter",
           "Messages naming a schema or version that is not loaded, by code.",
           _section(lambda st: st.schemas, _schema_unknown), ("code",)),
    Family("busd_schema_deprecated_pending", "gauge",
           "Uses of deprecated versions recorded and not yet logged.",
           _schemas(lambda sc: sc.gate.deprecated_pending)),
    Family("busd_schema_deprecated_dropped_total", "counter",
           "Uses of deprecated versions not recorded: the table of publishers was full.",
           _schemas(lambda sc: sc.gate.deprecated_dropped)),
    Family("busd_schema_reloads_total", "counter", "Schema directory reloads installed.",
           _schemas(lambda sc: sc.reloads)),
    Family("busd_schema_reload_failures_total", "counter",
           "Schema directory reloads refused (the previous set keeps serving).",
           _schemas(lambda sc: sc.reload_failures)),
    # -- the control socket, the metrics port, systemd ---------------------------------------
    Family("busd_control_connections_total", "counter", "Control socket connections accepted.",
           _control(lambda c: c.connections_total)),
    Family("busd_control_connections_refused_total", "counter",
           "Control socket connections refused over the connection limit.",
           _control(lambda c: c.connections_refused_total)),
    Family("busd_control_connections_evicted_total", "counter",
           "Control socket connections closed to make room: the one idle the longest.",
           _control(lambda c: c.connections_evicted_total)),
    Family("busd_control_connections_open", "gauge", "Control socket connections open now.",
           _control(lambda c: c.connections_open)),
    Family("busd_control_requests_total", "counter", "Control socket requests read.",
           _control(lambda c: c.requests_total)),
    Family("busd_control_errors_total", "counter",
           "Control socket requests answered with an error.",
           _control(lambda c: c.errors_total)),
    Family("busd_control_internal_errors_total", "counter",
           "Control socket requests whose handler failed (a bug).",
           _control(lambda c: c.internal_errors_total)),
    Family("busd_http_requests_total", "counter", "Requests read on the metrics port.",
           _http(lambda h: h.requests_total)),
    Family("busd_http_connections_refused_total", "counter",
           "Metrics port connections refused over the connection limit.",
           _http(lambda h: h.connections_refused_total)),
    Family("busd_http_connections_evicted_total", "counter",
           "Metrics-port connections closed to make room: the oldest without a request.",
           _http(lambda h: h.connections_evicted_total)),
    Family("busd_systemd_notify_sent_total", "counter", "sd_notify datagrams sent.",
           _systemd(lambda n: n.sent_total)),
    Family("busd_systemd_notify_failed_total", "counter",
           "sd_notify datagrams that could not be sent.",
           _systemd(lambda n: n.failed_total)),
    # -- authentication (docs/security.md) ---------------------------------------------------
    Family("busd_zap_requests_total", "counter",
           "Handshakes judged by the ZAP handler (every connection, with or without keys).",
           _zap(lambda z: z.requests)),
    Family("busd_zap_denied_total", "counter",
           "CURVE handshakes refused: the client's key is not in the keys directory.",
           _zap(lambda z: z.denied_unknown_key)),
    Family("busd_identities", "gauge", "Client keys known (the keys directory).",
           _trust(lambda t: t.identities)),
    Family("busd_trust_reload_failures_total", "counter",
           "Reloads of the keys directory or permissions file refused (the old state stays).",
           _trust(lambda t: t.reload_failures)),
)
# fmt: on
