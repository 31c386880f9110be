# frozen_string_literal: true

require "securerandom"
require_relative "errors"
require_relative "in_flight"
require_relative "keys"
require_relative "receipt"
require_relative "transport"
require_relative "wire"

module Busd
  DEFAULT_PUB_ENDPOINT = "tcp://127.0.0.1:7401"

  # Publish to busd over one DEALER socket (docs/protocol.md §1-§2).
  #
  # +publish+ sends and returns a Busd::Receipt without waiting for busd's reply: messages
  # are pipelined, at most +window+ of them in flight (+publish+ waits when busd falls
  # behind), and every reply is matched to its message by sequence number. +timeout+ bounds
  # every wait for busd: a message with no reply within it fails with PublishTimeout.
  # +retry_deadline+ (seconds after publish; nil = never) lets +rate_limited+ refusals, and
  # with +wait_when_disabled+ also +disabled+ ones, be sent again until then; +not_ready+
  # (a broker warming up) is retried within +timeout+ anyway. While a message waits to be
  # retried, later messages of its topic are held back so that none overtakes it (see
  # Busd::InFlight). Replies are read during +publish+, +flush+ and Receipt#result: call
  # +flush+ (or +close+) at the end.
  #
  # +keys:+ (a Busd::Keys; default from BUSD_KEY and BUSD_SERVER_KEY) for a busd with
  # authentication on: +name+ must then be the key's identity, or busd answers +forbidden+.
  #
  # Thread-safe: calls from several threads are serialized on one socket; a waiting call
  # lets the others in every few milliseconds. After a fork, make a new Publisher in the
  # child (the parent's raises ClosedError there).
  class Publisher
    DEFAULT = Object.new.freeze # a keyword left out: the publisher's own setting applies
    READ_EVERY = 32 # replies are read without waiting every this many publishes
    MAX_SLICE = 0.02 # seconds a waiting call holds the socket before letting others in
    TOPIC_CACHE = 4096
    EVENTS = ZMQ::POLLIN | ZMQ::POLLOUT

    attr_reader :name, :endpoint, :window, :timeout, :retry_deadline, :wait_when_disabled

    # Yields a publisher and closes it (after flushing) when the block ends; returns the
    # block's value. Without a block, the same as +new+.
    def self.open(*args, **kwargs)
      pub = new(*args, **kwargs)
      return pub unless block_given?

      begin
        yield pub
      ensure
        pub.close
      end
    end

    def initialize(endpoint = ENV.fetch("BUSD_PUB_ENDPOINT", DEFAULT_PUB_ENDPOINT),
                   name: ENV.fetch("BUSD_PUBLISHER", "ruby"), window: 1000, timeout: 5.0,
                   retry_deadline: nil, wait_when_disabled: false, reconnect_ivl: 0.1,
                   reconnect_ivl_max: 1.0, max_envelope_bytes: 1_048_576,
                   keys: Keys.from_env)
      unless Wire::PUBLISHER_NAME.match?(name)
        raise ArgumentError, "publisher name #{name.inspect}: expected #{Wire::PUBLISHER_RULE}"
      end
      raise ArgumentError, "window must be at least 1" unless window.is_a?(Integer) && window >= 1
      raise ArgumentError, "timeout must be > 0 seconds" unless timeout.positive?

      @endpoint = endpoint
      @name = name.dup.freeze
      @window = window
      @timeout = timeout.to_f
      @retry_deadline = retry_deadline
      @wait_when_disabled = wait_when_disabled
      # Over busd's frame limit (max_frame_bytes, default 1 MiB) libzmq would drop the whole
      # connection, and every message in flight on it would time out: refused here instead.
      @max_envelope_bytes = max_envelope_bytes
      @inflight = InFlight.new(@timeout)
      @lock = Mutex.new
      @pid = Process.pid
      @closed = false
      @topics = {}
      @id_prefix = SecureRandom.hex(8) # then the publish counter: unique, cheap per message
      @order = 0
      @since_read = 0
      @sock = Transport.dealer(endpoint, window: window, reconnect_ivl: reconnect_ivl,
                                         reconnect_ivl_max: reconnect_ivl_max, keys: keys)
    end

    # Send one message; return its Receipt without waiting for busd's reply. +data+ is the
    # payload Hash (Symbol or String keys). +id+ defaults to a fresh unique id.
    #
    # Raises PublishTimeout (+sent?+ false) when the message could not be handed to a
    # connection within +timeout+ (busd unreachable, or the window stayed full), and
    # Rejected +too_large+ (+local?+) for an envelope over +max_envelope_bytes+.
    def publish(topic, schema:, version:, data:, id: nil, retry_deadline: DEFAULT,
                wait_when_disabled: DEFAULT)
      order = @lock.synchronize { @order += 1 }
      id ||= @id_prefix + order.to_s(16).rjust(10, "0")
      envelope = Wire.encode_envelope(topic, schema, version, data, id: id, publisher: @name,
                                                                   ts: Wire.now_ns)
      submit(topic, envelope, id, order, retry_deadline, wait_when_disabled)
    end

    # Send an envelope already encoded (docs/protocol.md §1.1), byte for byte: for relays,
    # and for tests of busd's judgement. +id+ only names the message in errors.
    def publish_envelope(topic, envelope, id: nil, retry_deadline: DEFAULT,
                         wait_when_disabled: DEFAULT)
      order = @lock.synchronize { @order += 1 }
      submit(topic, envelope.b, id, order, retry_deadline, wait_when_disabled)
    end

    # Wait until every message published so far is settled; return (and forget) the errors
    # of the messages that failed since the previous flush, in the order they failed, except
    # those Receipt#result already raised. +timeout+ nil waits as long as the messages can
    # take; past a shorter +timeout+ raises PublishTimeout and the messages stay pending.
    def flush(timeout: nil)
      wait_until(timeout, "messages still in flight") { @inflight.count.zero? } unless @closed
      @lock.synchronize { @inflight.take_failures }
    end

    # Flush (up to +timeout+, default the publisher's timeout), then close the socket.
    # Messages still pending fail with ClosedError; returns every failure not yet flushed.
    def close(timeout: nil)
      return @lock.synchronize { @inflight.take_failures } if @closed

      if Process.pid == @pid
        begin
          flush(timeout: timeout || @timeout)
        rescue PublishTimeout
          nil
        end
      end
      @lock.synchronize do
        @closed = true
        @inflight.close(monotonic)
        @sock.close if Process.pid == @pid
        @inflight.take_failures
      end
    end

    def closed?
      @closed
    end

    # Messages whose fate is not known yet (in flight, or waiting to be sent).
    def pending
      @inflight.count
    end

    # Reply frames, or parts of them, that did not follow the protocol (ignored).
    def bad_replies
      @inflight.bad_replies
    end

    # Rejections with a nil seq: busd could not read a header this socket sent. Never
    # expected from this library; counted, and the message they concern times out.
    def unnumbered_rejections
      @inflight.unnumbered
    end

    # The latest reply said busd is shutting down (SIGTERM): it still answers, but a
    # publisher that can should send new messages to another broker.
    def draining?
      @inflight.draining?
    end

    def inspect
      "#<#{self.class.name} #{@endpoint} name=#{@name} pending=#{pending}#{" closed" if @closed}>"
    end

    # Receipt#result's wait.
    def wait_for(receipt, timeout)
      wait_until(timeout, "no reply yet") { receipt.done? }
    end

    private

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    def topic_frame(topic)
      frame = @topics[topic]
      return frame if frame

      @topics.clear if @topics.size >= TOPIC_CACHE # callers with unbounded topic sets
      @topics[topic] = topic.to_s.b.freeze
    end

    def submit(topic, envelope, id, order, retry_deadline, wait_when_disabled)
      check_usable
      if envelope.bytesize > @max_envelope_bytes
        raise local_refusal(Codes::TOO_LARGE, "envelope is #{envelope.bytesize} bytes; " \
                                              "this publisher's limit is #{@max_envelope_bytes}",
                            id, topic)
      end
      receipt = compose(topic, envelope, id, order, retry_deadline, wait_when_disabled)
      placed = @lock.synchronize do
        # Now and then, and when the window is full, read what arrived.
        @since_read += 1
        if @since_read >= READ_EVERY || @inflight.count >= @window
          @since_read = 0
          pump
        end
        @inflight.count < @window ? place(receipt) : :full
      end
      if placed == :full
        unless wait_until(@timeout, nil) { @inflight.count < @window }
          raise unsent(receipt, "the in-flight window stayed full")
        end
        placed = @lock.synchronize { place(receipt) }
      end
      return receipt if placed || wait_until(@timeout, nil, EVENTS) { place(receipt) }

      raise unsent(receipt, "no connection to busd accepted the message")
    end

    # Send now, or queue behind a held message of the topic; false when the socket cannot
    # take it yet (the lock is held).
    def place(receipt)
      return send_now(receipt) unless @inflight.held?(receipt.topic)

      @inflight.hold(receipt, monotonic)
      true
    end

    def compose(topic, envelope, id, order, retry_deadline, wait_when_disabled)
      now = monotonic
      rd = retry_deadline.equal?(DEFAULT) ? @retry_deadline : retry_deadline
      wd = wait_when_disabled.equal?(DEFAULT) ? @wait_when_disabled : wait_when_disabled
      retry_until = rd&.positive? ? now + rd : 0.0
      hold_until = now + [@timeout, rd || 0].max
      Receipt.new(self, topic.to_s, topic_frame(topic), envelope, id,
                  order: order, retry_until: retry_until, hold_until: hold_until,
                  wait_disabled: wd)
    end

    def check_usable
      if Process.pid != @pid
        raise ClosedError, "this publisher belongs to process #{@pid}; make a new one after fork"
      end
      raise ClosedError, "publisher is closed" if @closed
    end

    def local_refusal(code, reason, id, topic)
      error = Rejected.new(code, reason, extra: { "local" => true })
      error.id = id
      error.topic = topic
      error
    end

    def unsent(receipt, why)
      error = PublishTimeout.new("not sent within #{@timeout} s: #{why}", sent: false)
      error.id = receipt.id
      error.topic = receipt.topic
      error
    end

    # Hand the frames to libzmq without blocking (the lock is held).
    def send_now(receipt)
      return false unless @sock.send3(Wire.header(@inflight.next_seq), receipt.topic_frame,
                                      receipt.envelope)

      @inflight.sent(receipt, monotonic)
      true
    end

    # Read every reply already here, time messages out, send what is due (the lock is held).
    def pump
      now = monotonic
      inflight = @inflight
      while (frame = @sock.recv_frame)
        inflight.on_reply(frame[0], now) # a reply is one frame; any other is counted bad
      end
      inflight.expire(now)
      inflight.due_sends(now).each do |receipt|
        inflight.send_failed(receipt, now) unless send_now(receipt)
      end
    end

    # Pump until the block (run with the lock held) is true: true then. Past +timeout+
    # false, or PublishTimeout when +what+ is given. With +timeout+ nil this also ends when
    # no message is pending any more (nothing can change then).
    #
    # Error handling: the retries are the bookkeeping's (rate refusals, not_ready, a resend
    # that found the socket full); every message still ends by its own deadline, so this
    # loop ends. A libzmq error other than EAGAIN and EINTR raises Busd::Error to the caller,
    # a publisher closed meanwhile ClosedError.
    def wait_until(timeout, what, events = ZMQ::POLLIN)
      check_usable
      deadline = timeout && monotonic + timeout
      loop do
        @lock.synchronize do
          raise ClosedError, "publisher is closed" if @closed

          pump
          return true if yield

          now = monotonic
          if deadline && now >= deadline
            return false if what.nil?

            raise PublishTimeout.new("#{what} after #{timeout} s", sent: true)
          end
          return yield if deadline.nil? && @inflight.count.zero?

          slice = MAX_SLICE
          slice = [slice, deadline - now].min if deadline
          wake = @inflight.next_wakeup
          slice = [slice, wake - now].min if wake
          @sock.poll([(slice * 1000).ceil, 0].max, events)
        end
      end
    end
  end
end
