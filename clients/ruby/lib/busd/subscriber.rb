# frozen_string_literal: true

require_relative "errors"
require_relative "keys"
require_relative "transport"
require_relative "wire"

module Busd
  DEFAULT_SUB_ENDPOINT = "tcp://127.0.0.1:7402"

  # Receive the messages whose topic starts with a subscribed prefix ("" = every topic), as
  # Busd::Message values (docs/protocol.md §3).
  #
  # A subscription takes effect once it has reached busd, a few milliseconds after the
  # connection is made; busd does not acknowledge it, and messages published before then
  # are not delivered (the slow joiner: docs/protocol.md §3.1). Undecodable messages are
  # skipped and counted in +bad_messages+. Use one subscriber from one thread.
  class Subscriber
    include Enumerable

    MAX_SLICE_MS = 100 # a waiting receive looks up at least this often (interrupts, signals)

    attr_reader :endpoint, :bad_messages

    # Yields a subscriber and closes it when the block ends; returns the block's value.
    def self.open(*args, **kwargs)
      sub = new(*args, **kwargs)
      return sub unless block_given?

      begin
        yield sub
      ensure
        sub.close
      end
    end

    # +prefixes+: a String or an Array of them. +symbolize_keys+: decode payload map keys as
    # Symbols. +rcvhwm+: messages queued here before libzmq drops (at most once delivery).
    # +keys+: see Busd::Keys (busd then delivers only the prefixes the key is granted).
    def initialize(endpoint = ENV.fetch("BUSD_SUB_ENDPOINT", DEFAULT_SUB_ENDPOINT),
                   prefixes: [], rcvhwm: 10_000, symbolize_keys: false, reconnect_ivl: 0.1,
                   reconnect_ivl_max: 1.0, keys: Keys.from_env)
      @endpoint = endpoint
      @symbolize_keys = symbolize_keys
      @bad_messages = 0
      @sock = Transport.sub(endpoint, rcvhwm: rcvhwm, reconnect_ivl: reconnect_ivl,
                                      reconnect_ivl_max: reconnect_ivl_max, keys: keys)
      subscribe(*Array(prefixes))
    end

    def subscribe(*prefixes)
      prefixes.each { |p| @sock.set_bytes(ZMQ::SUBSCRIBE, p.to_s.b) }
      self
    end

    def unsubscribe(*prefixes)
      prefixes.each { |p| @sock.set_bytes(ZMQ::UNSUBSCRIBE, p.to_s.b) }
      self
    end

    # The next message, or nil when +timeout+ seconds pass first (nil: wait for ever).
    #
    # Error handling: retries nothing itself; libzmq reconnects a dropped connection (and
    # resubscribes) by itself. An undecodable message is skipped and counted in
    # +bad_messages+. A closed subscriber raises ClosedError; any other libzmq error raises
    # Busd::Error to the caller.
    def receive(timeout: nil)
      deadline = timeout && monotonic + timeout
      loop do
        while (frames = @sock.recv_message)
          message = decode(frames)
          return message if message
        end
        wait_ms = MAX_SLICE_MS
        if deadline
          left = deadline - monotonic
          return nil if left <= 0

          wait_ms = [wait_ms, (left * 1000).ceil].min
        end
        @sock.poll(wait_ms)
      end
    end

    # Yields every message as it arrives; with +idle:+ (seconds) it returns once no message
    # came for that long, else it runs until the subscriber is closed.
    #
    # Error handling: as +receive+; an exception from the block ends the loop.
    def each(idle: nil)
      return enum_for(:each, idle: idle) unless block_given?

      until closed?
        message = receive(timeout: idle)
        return self if message.nil?

        yield message
      end
      self
    end

    def close
      @sock.close
    end

    def closed?
      @sock.closed?
    end

    def inspect
      "#<#{self.class.name} #{@endpoint}#{" closed" if closed?}>"
    end

    private

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    # Frames 0 and 1 are topic and envelope; busd adds a third, its 16-byte delivery stamp
    # (epoch and per-topic sequence number, docs/protocol.md section 3). This client does
    # not check it for gaps yet; a two-frame message (an older busd) is read too.
    def decode(frames)
      unless frames.size == 2 || (frames.size == 3 && frames[2].bytesize == 16)
        @bad_messages += 1
        return nil
      end
      Wire.decode_message(frames[0], frames[1], symbolize_keys: @symbolize_keys)
    rescue DecodeError
      @bad_messages += 1
      nil
    end
  end
end
