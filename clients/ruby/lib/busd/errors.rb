# frozen_string_literal: true

module Busd
  # Base of every error this library raises about a message or a connection. Every
  # published message ends accepted or with one of these; +id+ and +topic+ name the message.
  class Error < StandardError
    attr_accessor :id, :topic
  end

  # The Python client's name for the same base class.
  BusError = Error

  # busd refused the message. +code+ is stable (docs/protocol.md §2.1); +reason+ is for
  # people and may change between releases. +extra+ holds the rejection's other fields
  # (+key+, +retry_after_ms+, ...); <tt>extra["local"]</tt> is true when this library
  # refused the message before sending it.
  class Rejected < Error
    attr_reader :code, :reason, :seq, :extra

    def initialize(code, reason, seq: nil, extra: {})
      super("#{code}: #{reason}")
      @code = code
      @reason = reason
      @seq = seq
      @extra = extra.dup.freeze
    end

    def local?
      @extra["local"] == true
    end
  end

  # A token bucket for +key+ was empty; it holds a token again after +retry_after_ms+.
  class RateLimited < Rejected
    attr_reader :key, :retry_after_ms

    def initialize(key:, retry_after_ms:, reason: "rate limited", seq: nil, extra: {})
      super(Codes::RATE_LIMITED, reason, seq: seq, extra: extra)
      @key = key
      @retry_after_ms = retry_after_ms
    end
  end

  # The rate for +key+ is 0: an operator stopped publishing under that key.
  class Disabled < Rejected
    attr_reader :key

    def initialize(key:, reason: "disabled", seq: nil, extra: {})
      super(Codes::DISABLED, reason, seq: seq, extra: extra)
      @key = key
    end
  end

  # That broker just started and waits for its subscribers to reconnect (+not_ready+). Not a
  # judgement of the message: the publisher retries it by itself within its timeout.
  class NotReady < Rejected
    attr_reader :retry_after_ms

    def initialize(retry_after_ms:, reason: "not ready", seq: nil, extra: {})
      super(Codes::NOT_READY, reason, seq: seq, extra: extra)
      @retry_after_ms = retry_after_ms
    end
  end

  # No reply came in time. When +sent?+ is false the message never left this process (no
  # connection to busd, the window stayed full, or it was held behind a refused message of
  # its topic until its deadline): busd surely never saw it. When +sent?+ is true its fate is
  # unknown: busd may or may not have accepted it.
  class PublishTimeout < Error
    attr_reader :seq

    def initialize(message, sent:, seq: nil)
      super(message)
      @sent = sent
      @seq = seq
    end

    def sent?
      @sent
    end
  end

  # The publisher or subscriber was closed (or used in another process after a fork); the
  # message's fate is unknown.
  class ClosedError < Error; end

  # Bytes from busd that do not follow docs/protocol.md (a subscriber skips and counts them).
  class DecodeError < Error; end

  # The typed error for one rejection map of a reply; unknown codes stay +Rejected+, a map
  # without a string code is taken as +internal+ (docs/protocol.md §2.1).
  def self.rejection_from(item)
    code = item["code"].is_a?(String) ? item["code"] : Codes::INTERNAL
    reason = item["reason"].is_a?(String) ? item["reason"] : ""
    seq = item["seq"].is_a?(Integer) ? item["seq"] : nil
    extra = item.reject { |k, _| %w[code reason seq].include?(k) }
    key = item["key"].is_a?(String) ? item["key"] : ""
    after = item["retry_after_ms"]
    after = after.is_a?(Integer) && after >= 0 ? after : 0
    case code
    when Codes::RATE_LIMITED
      RateLimited.new(key: key, retry_after_ms: after, reason: reason, seq: seq, extra: extra)
    when Codes::NOT_READY
      NotReady.new(retry_after_ms: after, reason: reason, seq: seq, extra: extra)
    when Codes::DISABLED
      Disabled.new(key: key, reason: reason, seq: seq, extra: extra)
    else
      Rejected.new(code, reason, seq: seq, extra: extra)
    end
  end
end
