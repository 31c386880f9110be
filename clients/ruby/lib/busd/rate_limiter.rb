# frozen_string_literal: true

require_relative "errors"
require_relative "rates"

module Busd
  # Token buckets whose limits come from rate files in a directory, read the way busd reads
  # its own (docs/rates.md): one file per key, named by the key, holding "RATE" or
  # "RATE BURST". Thread-safe.
  #
  #   limiter = Busd::RateLimiter.new("/etc/rates")
  #   limiter.limit("publish", 10) { bus.publish(...) }   # 10/s unless the file says otherwise
  #
  # The file wins over the rate the code passes; without a file the code's rate applies
  # (none: unlimited). "0" stops the key: +limit+ raises Busd::Disabled. Files are re-read
  # at most once per +reread_interval+ per key (monotonic clock), as busd applies a change
  # within a second. Like busd, a change never loses a kill switch by accident:
  #
  # - a file deleted from the directory: the key's file limit is gone (the code's rate);
  # - bad content, an empty file (+echo+ truncates before it writes), an unreadable file or
  #   one that is not a regular file: the last good value stays;
  # - the directory deleted: every last good value stays;
  # - the directory recreated: files in it apply; a key whose file is missing from the new
  #   directory keeps its last good value (an orphan) until a file for it appears.
  #
  # +problems+ says what is wrong now, per key, with busd's kinds (+content+, +empty+,
  # +unreadable+, +not_a_file+, +directory+, +orphan+).
  class RateLimiter
    Problem = Struct.new(:kind, :message)

    # One key's state: the last good limit its file gave, and its bucket.
    class KeyState
      attr_accessor :file_limit, :read_at, :gen, :bucket, :problem

      def initialize
        @file_limit = nil # nil: no file (the code's default applies)
        @read_at = -Float::INFINITY
        @gen = nil # the directory generation the file was last read in
        @bucket = nil
        @problem = nil
      end
    end

    attr_reader :directory, :reread_interval

    def initialize(directory = ENV.fetch("BUSD_RATES_DIR", "/etc/rates"), reread_interval: 1.0,
                   clock: -> { Process.clock_gettime(Process::CLOCK_MONOTONIC) },
                   sleeper: ->(seconds) { sleep(seconds) })
      @directory = directory.to_s
      @reread_interval = reread_interval
      @clock = clock
      @sleeper = sleeper
      @keys = {}
      @lock = Mutex.new
      @dir_handle = nil # an open descriptor pins the directory's inode: a recreated one differs
      @dir_gen = 0
    end

    # Run the block once a token for +key+ was taken; returns the block's value. +rate+ and
    # +burst+ are the limit when no rate file for +key+ exists (+rate+ nil: unlimited then).
    #
    # +timeout+ nil: wait as long as the rate needs, but raise Disabled at once when the key
    # is disabled. With +timeout+ (seconds): raise RateLimited as soon as no token can come
    # within it; while the key is disabled, keep re-reading its file until the timeout, then
    # raise Disabled.
    def limit(key, rate = nil, burst: nil, timeout: nil)
      acquire(key, rate, burst: burst, timeout: timeout)
      yield
    end

    # Take a token for +key+, sleeping until there is one (see +limit+).
    #
    # Error handling: a missing, bad, empty or unreadable file never raises here (the last
    # good value stays, +problems+ says why); the loop ends with a token, or raises Disabled
    # or RateLimited as +limit+ says.
    def acquire(key, rate = nil, burst: nil, timeout: nil)
      default = rate.nil? ? nil : Rates::Limit.of(rate, burst)
      deadline = timeout && @clock.call + timeout
      while (wait = next_wait(key, default, deadline)).positive?
        @sleeper.call(wait)
      end
      nil
    end

    # Take a token for +key+ if there is one now; never waits.
    def try_acquire(key, rate = nil, burst: nil)
      default = rate.nil? ? nil : Rates::Limit.of(rate, burst)
      take(key, default)[0].zero?
    end

    # The limit in force for +key+ (nil: unlimited), re-reading its file if due.
    def limit_for(key, rate = nil, burst: nil)
      default = rate.nil? ? nil : Rates::Limit.of(rate, burst)
      @lock.synchronize { state(key, @clock.call).file_limit || default }
    end

    # Keys whose file (or directory) has a problem now: key => Problem(kind, message).
    def problems
      @lock.synchronize do
        @keys.each_with_object({}) { |(key, st), out| out[key] = st.problem if st.problem }
      end
    end

    private

    # 0 when a token was taken, else how long to sleep; raises when waiting is futile.
    def next_wait(key, default, deadline)
      wait, limit, now = take(key, default)
      return 0.0 if wait.zero?

      if limit.disabled?
        if deadline.nil? || now >= deadline
          raise Disabled.new(key: key, reason: "the rate for #{key.inspect} is 0: " \
                                               "publishing is stopped")
        end
        return [wait, deadline - now].min
      end
      if deadline && now + wait > deadline
        raise RateLimited.new(key: key, retry_after_ms: (wait * 1000).ceil,
                              reason: "no token for #{key.inspect} within the timeout")
      end
      wait
    end

    # [0, limit, now] when a token was taken (or no limit applies), else [seconds to wait,
    # limit, now].
    def take(key, default)
      @lock.synchronize do
        now = @clock.call
        st = state(key, now)
        limit = st.file_limit || default
        return [0.0, nil, now] if limit.nil?

        if st.bucket.nil?
          st.bucket = Rates::TokenBucket.new(limit, now)
        elsif st.bucket.rate != limit.rate || st.bucket.burst != limit.burst
          st.bucket.reconfigure(limit, now)
        end
        if limit.disabled?
          # Look again when the file is next re-read.
          return [[1e-3, st.read_at + @reread_interval - now].max, limit, now]
        end

        [st.bucket.take(now), limit, now]
      end
    end

    def state(key, now)
      st = @keys[key]
      if st.nil?
        problem = Rates.file_name_problem(key)
        raise ArgumentError, "rate key #{key.inspect}: #{problem}" if problem

        st = @keys[key] = KeyState.new
      end
      if now - st.read_at >= @reread_interval
        st.read_at = now
        reload(key, st)
      end
      st
    end

    def reload(key, st)
      gen = directory_generation
      return keep(st, "directory", "cannot read the directory #{@directory}") if gen.nil?

      path = File.join(@directory, key)
      stat = File.stat(path)
      return keep(st, "not_a_file", "#{path} is not a regular file") unless stat.file?

      content = File.open(path, "rb") { |f| f.read(Rates::MAX_FILE_BYTES + 1) } || "".b
      st.file_limit = Rates.read(content)
      st.gen = gen
      st.problem = nil
    rescue Errno::ENOENT
      missing(st, gen)
    rescue Rates::FileError => e
      keep(st, e.kind, e.message)
    rescue SystemCallError, IOError => e
      keep(st, "unreadable", "cannot read #{path}: #{e.message}")
    end

    # No file for the key: deleted (the limit goes), unless the directory was recreated
    # since the file was read (an orphan: the last good value stays).
    def missing(st, gen)
      if st.file_limit && st.gen != gen
        keep(st, "orphan", "file missing from the recreated directory; last good value kept")
      else
        st.file_limit = nil
        st.gen = gen
        st.problem = nil
      end
    end

    def keep(st, kind, message)
      st.problem = Problem.new(kind, message).freeze
      nil
    end

    # The generation of the directory now at the path (a new one when it was recreated), or
    # nil when it cannot be read.
    def directory_generation
      now = File.stat(@directory)
      return nil unless now.directory?

      held = @dir_handle&.stat
      return @dir_gen if held && held.dev == now.dev && held.ino == now.ino

      @dir_handle&.close
      @dir_handle = File.open(@directory)
      @dir_gen += 1
    rescue SystemCallError, IOError
      @dir_handle&.close
      @dir_handle = nil
      nil
    end
  end

  class << self
    attr_writer :rate_limiter

    # The process's limiter: the rates directory from BUSD_RATES_DIR, else /etc/rates.
    def rate_limiter
      @rate_limiter ||= RateLimiter.new
    end

    # The seed's idiom: run the block at most +rate+ times per second under +key+, unless
    # the rates file for +key+ says otherwise ("echo 0 > /etc/rates/publish" stops it):
    #
    #   Busd.limit("publish", 10) do
    #     bus.publish(...)
    #   end
    def limit(key, rate = nil, burst: nil, timeout: nil, &block)
      rate_limiter.limit(key, rate, burst: burst, timeout: timeout, &block)
    end
  end
end
