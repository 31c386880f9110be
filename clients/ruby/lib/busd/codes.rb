# frozen_string_literal: true

module Busd
  # The stable rejection codes of docs/protocol.md §2.1, and how a publisher treats each.
  #
  # Codes are never renamed or reused; busd may add new ones, and a client treats a code it
  # does not know as a rejection that retrying will not cure.
  module Codes
    BAD_FRAME = "bad_frame"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    TOO_LARGE = "too_large"
    BAD_ENCODING = "bad_encoding"
    BAD_TOPIC = "bad_topic"
    BAD_ENVELOPE = "bad_envelope"
    UNKNOWN_SCHEMA = "unknown_schema"
    UNKNOWN_VERSION = "unknown_version"
    RETIRED_VERSION = "retired_version"
    SCHEMA_NOT_ALLOWED = "schema_not_allowed"
    INVALID = "invalid"
    RATE_LIMITED = "rate_limited"
    DISABLED = "disabled"
    SHUTTING_DOWN = "shutting_down"
    INTERNAL = "internal"
    NOT_READY = "not_ready"
    FORBIDDEN = "forbidden"

    ALL = [
      BAD_FRAME, UNSUPPORTED_PROTOCOL, TOO_LARGE, BAD_ENCODING, BAD_TOPIC, BAD_ENVELOPE,
      UNKNOWN_SCHEMA, UNKNOWN_VERSION, RETIRED_VERSION, SCHEMA_NOT_ALLOWED, INVALID,
      RATE_LIMITED, DISABLED, SHUTTING_DOWN, INTERNAL, NOT_READY, FORBIDDEN
    ].freeze

    # About the broker, not the message: send it again later, or to another broker.
    BROKER_REFUSALS = [NOT_READY, SHUTTING_DOWN].freeze
    # About the rate, not the message: retried within a deadline the caller chooses.
    RATE_REFUSALS = [RATE_LIMITED, DISABLED].freeze
  end
end
