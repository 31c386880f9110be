# frozen_string_literal: true

require "json"
require "socket"
require_relative "errors"

module Busd
  # busd refused a control command: +code+ is stable (docs/protocol.md §6.1), the message is
  # for people.
  class ControlError < StandardError
    attr_reader :code

    def initialize(code, message)
      super("#{code}: #{message}")
      @code = code
    end
  end

  # No answer: busd is not running, the path is wrong, or it did not answer in time.
  class ControlUnavailable < ControlError
    def initialize(message)
      super("unavailable", message)
    end
  end

  # A client of busd's control socket (docs/protocol.md §6): JSON lines over a Unix stream
  # socket. One connection, opened on first use and opened again after a failure.
  #
  #   Busd::Control.open do |control|
  #     control.set_rate("publish", 500)
  #     control.rates["limits"]
  #   end
  #
  # +call+ returns the reply without its "ok" member, or raises ControlError with busd's
  # code (+busy+ when busd has too many control connections: it says so right after the
  # connection opens, and closes it) or ControlUnavailable.
  class Control
    DEFAULT_PATH = "./var/run/control.sock"
    MAX_REPLY_BYTES = 16 * 1024 * 1024

    attr_reader :path, :timeout

    def self.open(path = nil, timeout: 5.0)
      control = new(path, timeout: timeout)
      return control unless block_given?

      begin
        yield control
      ensure
        control.close
      end
    end

    # +path+ defaults to BUSD_CONTROL, else ./var/run/control.sock.
    def initialize(path = nil, timeout: 5.0)
      @path = (path || ENV.fetch("BUSD_CONTROL", nil) || DEFAULT_PATH).to_s
      @timeout = timeout
      @sock = nil
      @buffer = "".b
    end

    def call(cmd, **args)
      line = "#{JSON.generate({ "cmd" => cmd.to_s }.merge(args.transform_keys(&:to_s)))}\n"
      reused = !@sock.nil?
      reply = begin
        exchange(line)
      rescue ControlUnavailable
        raise unless reused

        close # busd closes idle connections: a reused one may be gone. Once more, fresh.
        exchange(line)
      end
      return reply.except("ok") if reply["ok"] == true

      error = reply["error"]
      raise ControlError.new("bad_reply", "a reply without ok/error: #{reply}") unless error.is_a?(Hash)

      raise ControlError.new(error.fetch("code", "unknown").to_s, error.fetch("message", "").to_s)
    end

    # rates.list: the rates directory, every limit with its tokens and refusals, problems.
    def rates
      call("rates.list")
    end

    # rates.set: writes the key's rate file (+rate+ 0 disables the key).
    def set_rate(key, rate, burst: nil)
      burst.nil? ? call("rates.set", key: key, rate: rate) : call("rates.set", key: key, rate: rate, burst: burst)
    end

    # rates.clear: removes the key's rate file.
    def clear_rate(key)
      call("rates.clear", key: key)
    end

    def schemas
      call("schemas.list")
    end

    def reload_schemas
      call("schemas.reload")
    end

    def stats
      call("stats")["stats"]
    end

    def close
      @sock&.close
      @sock = nil
      @buffer = "".b
    end

    private

    def exchange(line)
      begin
        @sock ||= UNIXSocket.new(@path)
        begin
          @sock.write(line)
        rescue Errno::EPIPE, Errno::ECONNRESET
          nil # busd may have said busy and closed before reading us: its line is still here
        end
        raw = read_line
      rescue SystemCallError, IOError, SocketError => e
        close
        raise ControlUnavailable, "cannot talk to busd at #{@path}: #{e.message}"
      end
      begin
        reply = JSON.parse(raw)
      rescue JSON::ParserError => e
        close
        raise ControlError.new("bad_reply", "busd sent a line that is not JSON: #{e.message}")
      end
      unless reply.is_a?(Hash)
        close
        raise ControlError.new("bad_reply", "busd sent a reply that is not a JSON object")
      end
      reply
    end

    def read_line
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + @timeout
      until (newline = @buffer.index("\n"))
        raise IOError, "reply over #{MAX_REPLY_BYTES} bytes" if @buffer.bytesize > MAX_REPLY_BYTES

        left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
        raise IOError, "no answer within #{@timeout} s" if left <= 0 || !@sock.wait_readable(left)

        chunk = @sock.read_nonblock(65_536, exception: false)
        next if chunk == :wait_readable
        raise IOError, "busd closed the connection" if chunk.nil?

        @buffer << chunk
      end
      line = @buffer.byteslice(0, newline)
      @buffer = @buffer.byteslice(newline + 1, @buffer.bytesize) || "".b
      line.force_encoding(Encoding::UTF_8)
    end
  end
end
