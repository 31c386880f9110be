# frozen_string_literal: true

module Busd
  # Rate limits (docs/rates.md): the rate-file grammar, Limit and the token bucket, as busd
  # defines them (busd_protocol/rates.py). A rate file holds "RATE" or "RATE BURST"
  # (messages per second, ASCII decimals) and nothing else; "0" disables the key; the burst
  # defaults to max(1, RATE).
  module Rates
    MAX_RATE = 1e9 # messages per second; anything above is a typo, not a limit
    MAX_FILE_BYTES = 256 # a valid rate line is far shorter; a big file is not a rate file
    # Matched against the whole file (\A...\z: a second newline is refused).
    GRAMMAR = /\A[0-9]+(?:\.[0-9]+)?(?:[ \t]+[0-9]+(?:\.[0-9]+)?)?[ \t]*\n?\z/n.freeze
    # Refills accumulate float error (0.6 + 0.4 may sum to 0.9999999999): a caller that waits
    # exactly the time it was told must pass, so a token is "there" within this tolerance.
    ONE_TOKEN = 1.0 - 1e-9
    # A key is a file name in the rates directory: 1-255 bytes, no control characters,
    # spaces or "/", not starting with a dot.
    FILE_NAME = %r{\A[^\x00-\x20\x7f/]{1,255}\z}.freeze

    # A rate file's content is not "RATE" or "RATE BURST"; +kind+ is "content" or "empty".
    class FileError < ArgumentError
      attr_reader :kind

      def initialize(message, kind = "content")
        super(message)
        @kind = kind
      end
    end

    # +rate+ messages per second with bursts up to +burst+; +rate+ 0 disables.
    Limit = Struct.new(:rate, :burst) do
      # A checked limit; +burst+ defaults to max(1, rate) (one second's worth).
      def self.of(rate, burst = nil)
        rate = Float(rate)
        limit = new(rate, burst.nil? ? [1.0, rate].max : Float(burst)).freeze
        problem = limit.problem
        raise ArgumentError, problem if problem

        limit
      end

      def problem
        unless rate.finite? && rate >= 0 && rate <= MAX_RATE
          return "rate must be a number from 0 to #{MAX_RATE.to_i}"
        end
        unless burst.finite? && burst >= 1 && burst <= MAX_RATE
          return "burst must be a number from 1 to #{MAX_RATE.to_i}"
        end

        nil
      end

      def disabled?
        rate.zero?
      end
    end

    module_function

    # The limit a rate file's bytes say; raises FileError saying what is wrong.
    def read(content)
      content = content.b
      raise FileError.new("empty file (not yet written?)", "empty") if content.empty?
      raise FileError, "over #{MAX_FILE_BYTES} bytes" if content.bytesize > MAX_FILE_BYTES
      unless GRAMMAR.match?(content)
        raise FileError, "expected 'RATE' or 'RATE BURST' as decimal numbers, " \
                         "got #{content[0, 40].inspect}"
      end

      rate, burst = content.split.map { |part| Float(part) }
      limit = Limit.new(rate, burst || [1.0, rate].max).freeze
      problem = limit.problem
      raise FileError, problem if problem

      limit
    end

    # The limit, or nil when the bytes are not a valid rate file.
    def parse(content)
      read(content)
    rescue FileError
      nil
    end

    # Why +key+ cannot name a file in a rates directory, or nil when it can.
    def file_name_problem(key)
      return nil if FILE_NAME.match?(key.b) && !key.start_with?(".")

      "not a file name in the rates directory (1-255 bytes, no '/', space or dot first)"
    end

    # +rate+ tokens per second, holding at most +burst+; a new bucket starts full. Time is
    # the +now+ argument (monotonic seconds). A disabled bucket never holds a token.
    class TokenBucket
      attr_reader :rate, :burst, :tokens

      def initialize(limit, now)
        @rate = limit.rate
        @burst = limit.burst
        @tokens = limit.rate.positive? ? limit.burst : 0.0
        @stamp = now
      end

      # As busd: a changed limit keeps the tokens (capped at the new burst), except a
      # re-enabled one (from 0), which starts full.
      def reconfigure(limit, now)
        refill(now)
        reenabled = @rate.zero? && limit.rate.positive?
        @rate = limit.rate
        @burst = limit.burst
        @tokens = if limit.rate.zero? then 0.0
                  elsif reenabled then limit.burst
                  else [@tokens, limit.burst].min
                  end
      end

      def refill(now)
        elapsed = now - @stamp
        if elapsed.positive? # a monotonic clock never goes back; if it did, refill nothing
          @tokens = [@burst, @tokens + elapsed * @rate].min
          @stamp = now
        end
        @tokens
      end

      # Take a token and return 0.0, or return the seconds until one is there (rate > 0).
      def take(now)
        refill(now)
        if @tokens >= ONE_TOKEN
          @tokens = [0.0, @tokens - 1.0].max
          return 0.0
        end
        (1.0 - @tokens) / @rate
      end
    end
  end
end
