# frozen_string_literal: true

require "msgpack"
require "securerandom"

module Busd
  # One message as a subscriber receives it (docs/protocol.md §3): the envelope's fields,
  # decoded, and +envelope+, the bytes busd forwarded (byte for byte what the publisher sent).
  # +ts+ is nanoseconds since the Unix epoch; +time+ gives it as a Time.
  Message = Struct.new(:topic, :schema, :version, :id, :publisher, :ts, :data, :envelope,
                       keyword_init: true) do
    def time
      Time.at(ts / 1_000_000_000, ts % 1_000_000_000, :nsec)
    end

    # The protocol fields, without the raw envelope (e.g. for JSON output).
    def to_h
      super.except(:envelope)
    end
  end

  # Protocol version 1 on the wire (docs/protocol.md §1-§3): the header frame, envelopes
  # and the checks a client makes on names before it sends anything.
  module Wire
    MAGIC = 0x42 # ASCII "B"
    PROTOCOL_VERSION = 1
    HEADER_LEN = 10
    MAX_TOPIC_BYTES = 255
    MAX_ID_CHARS = 128
    # A publisher name, in envelopes and in publisher.<name> rate keys.
    PUBLISHER_NAME = /\A[A-Za-z0-9._-]{1,128}\z/.freeze
    PUBLISHER_RULE = "1-128 chars of A-Z a-z 0-9 . _ -"
    FIELDS = %w[topic schema version id publisher ts data].freeze

    module_function

    # Frame 0 of a publish: "B", the protocol version, then +seq+ as a big-endian uint64.
    def header(seq)
      [MAGIC, PROTOCOL_VERSION, seq].pack("CCQ>")
    end

    # Wall-clock nanoseconds since the epoch: the envelope's +ts+.
    def now_ns
      Process.clock_gettime(Process::CLOCK_REALTIME, :nanosecond)
    end

    # Frame 2 of a publish. +data+ is a Hash; Symbol keys and values go out as msgpack str,
    # UTF-8 Strings as str, binary (ASCII-8BIT) Strings as bin.
    def encode_envelope(topic, schema, version, data, id:, publisher:, ts: now_ns)
      # One packer per thread, reset after each use: MessagePack.pack makes one per call.
      packer = (Thread.current[:busd_packer] ||= MessagePack::Packer.new)
      packer.write({ "topic" => topic, "schema" => schema, "version" => version, "id" => id,
                     "publisher" => publisher, "ts" => ts, "data" => data }).full_pack
    rescue StandardError
      packer&.clear # a value msgpack cannot encode: nothing of it stays for the next message
      raise
    end

    # A fresh message id: 128 random bits as 32 hex digits.
    def new_id
      SecureRandom.hex(16)
    end

    # The two egress frames as a Message; raises DecodeError when they are not a valid
    # envelope for that topic. Unknown envelope keys are ignored.
    def decode_message(topic_frame, envelope, symbolize_keys: false)
      topic = topic_frame.dup.force_encoding(Encoding::UTF_8)
      raise DecodeError, "topic frame is not UTF-8" unless topic.valid_encoding?

      env = unpack(envelope, symbolize_keys)
      raise DecodeError, "envelope is not a msgpack map" unless env.is_a?(Hash)

      get = symbolize_keys ? ->(name) { env[name.to_sym] } : ->(name) { env[name] }
      values = FIELDS.to_h { |name| [name, get.call(name)] }
      check_fields(values, topic)
      Message.new(topic: topic, schema: values["schema"], version: values["version"],
                  id: values["id"], publisher: values["publisher"], ts: values["ts"],
                  data: values["data"], envelope: envelope).freeze
    end

    def unpack(bytes, symbolize_keys)
      MessagePack.unpack(bytes, symbolize_keys: symbolize_keys)
    rescue MessagePack::UnpackError, EOFError, ArgumentError, RangeError => e
      raise DecodeError, "envelope is not valid msgpack: #{e.message}"
    end

    TYPES = { "topic" => String, "schema" => String, "version" => Integer, "id" => String,
              "publisher" => String, "ts" => Integer, "data" => Hash }.freeze

    def check_fields(values, topic)
      TYPES.each do |name, kind|
        value = values[name]
        unless value.is_a?(kind)
          raise DecodeError, "envelope.#{name}: expected #{kind.name.downcase}, got #{value.class}"
        end
        if value.is_a?(String) && !value.valid_encoding?
          raise DecodeError, "envelope.#{name}: not UTF-8"
        end
      end
      raise DecodeError, "envelope.topic differs from the topic frame" if values["topic"] != topic
    end
  end
end
