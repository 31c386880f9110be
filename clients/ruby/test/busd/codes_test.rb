# frozen_string_literal: true

require "test_helper"

# Every rejection code a client can provoke from a default busd, each as its error class,
# and the order in which busd's checks apply (docs/protocol.md §2.3).
class CodesTest < Minitest::Test
  include BusdTest

  GOOD_ENV = { "topic" => "release.codes", "schema" => "release", "version" => 2, "id" => "c1",
               "publisher" => "ruby-test", "ts" => 1, "data" => RELEASE }.freeze

  # The error busd answers for an envelope sent byte for byte (nil: accepted).
  def fate(envelope, topic: "release.codes")
    pub = (@pub ||= publisher)
    pub.publish_envelope(topic, envelope.is_a?(Hash) ? MessagePack.pack(envelope) : envelope).result
    nil
  rescue Busd::Rejected => e
    e
  end

  def code(envelope, topic: "release.codes")
    fate(envelope, topic: topic)&.code
  end

  # A raw DEALER: frames no client library would send, and the replies to them.
  def raw_exchange(*frames)
    sock = Busd::Transport::Socket.new(ZMQ::DEALER, pub_endpoint)
    sock.set(ZMQ::LINGER, 0)
    sock.connect
    assert await("the raw DEALER connecting") { sock.poll(10, ZMQ::POLLOUT) }
    assert sock.send_frames(frames.map(&:b))
    assert sock.poll(5000), "no reply"
    frame, = sock.recv_frame
    MessagePack.unpack(frame)
  ensure
    sock&.close
  end

  # A publish is a header and a topic/envelope pair per message (docs/protocol.md §1.2): a
  # topic without its envelope is bad_frame under the seq it would have had, and the
  # complete pairs before it are judged as usual.
  def test_a_topic_without_its_envelope_is_bad_frame_with_its_seq
    reply = raw_exchange(Busd::Wire.header(7), "release.codes")
    assert_equal [[7, "bad_frame"]], reply["rej"].map { |r| [r["seq"], r["code"]] }
    reply = raw_exchange(Busd::Wire.header(8), "release.codes", MessagePack.pack(GOOD_ENV), "x")
    assert_equal [[8, 8]], reply["acc"]
    assert_equal [[9, "bad_frame"]], reply["rej"].map { |r| [r["seq"], r["code"]] }
  end

  def test_a_header_that_cannot_be_read_is_bad_frame_with_nil_seq
    ["B\x01\x00\x00".b, "X" * 10, "".b, "B".b].each do |header|
      reply = raw_exchange(header, "release.codes", MessagePack.pack(GOOD_ENV))
      assert_equal [[nil, "bad_frame"]], reply["rej"].map { |r| [r["seq"], r["code"]] }, header.inspect
    end
  end

  def test_another_protocol_version_is_unsupported_protocol_with_the_seq_when_ten_bytes
    reply = raw_exchange([0x42, 2, 9].pack("CCQ>"), "release.codes", MessagePack.pack(GOOD_ENV))
    assert_equal [[9, "unsupported_protocol"]], reply["rej"].map { |r| [r["seq"], r["code"]] }
    reply = raw_exchange("B\x02".b, "release.codes", MessagePack.pack(GOOD_ENV))
    assert_equal [[nil, "unsupported_protocol"]], reply["rej"].map { |r| [r["seq"], r["code"]] }
  end

  def test_the_publisher_counts_a_rejection_it_cannot_match_and_settles_nothing
    pub = publisher
    pub.publish_envelope("release.codes", MessagePack.pack(GOOD_ENV)).result
    sock = pub.instance_variable_get(:@sock) # one header no client would send, on its socket
    assert sock.send_frames(["B".b, "t".b, "e".b])
    await("the unnumbered rejection") do
      pub.flush
      pub.unnumbered_rejections == 1
    end
    assert_equal 0, pub.pending
  end

  def test_an_envelope_over_max_message_bytes_is_too_large_before_its_topic_is_judged
    big = GOOD_ENV.merge("data" => RELEASE.merge("cmd" => "x" * 70_000))
    assert_equal "too_large", code(big)
    assert_equal "too_large", code(big.merge("topic" => "bad topic"), topic: "bad topic")
    assert_match(/limit is 65536/, fate(big).reason)
  end

  def test_topics_busd_refuses_are_bad_topic
    assert_equal "bad_topic", code(GOOD_ENV.merge("topic" => "release shop"), topic: "release shop")
    assert_equal "bad_topic", code(GOOD_ENV.merge("topic" => ""), topic: "")
    assert_equal "bad_topic", code(GOOD_ENV.merge("topic" => "release.other"))
    assert_equal "bad_topic", code(GOOD_ENV.merge("topic" => "r" * 256), topic: "r" * 256)
    assert_equal "bad_topic", code(GOOD_ENV.merge("topic" => "release.\u0001"), topic: "release.\u0001")
  end

  def test_envelopes_that_are_not_strict_msgpack_maps_are_bad_encoding
    good = MessagePack.pack(GOOD_ENV)
    {
      "trailing bytes" => good + "\x00".b,
      "not msgpack" => "\xc1".b,
      "truncated" => good[0..-3],
      "not a map" => MessagePack.pack([1, 2]),
      "an integer map key" => MessagePack.pack(GOOD_ENV.merge(1 => 2)),
      "an integer key inside data" => MessagePack.pack(GOOD_ENV.merge("data" => { 1 => "x" })),
      "a nil map key" => "\x81\xc0\x01".b,
      "a str that is not UTF-8" => MessagePack.pack(GOOD_ENV.merge("id" => "\xff".dup.force_encoding("UTF-8"))),
      "an ext type" => MessagePack.pack(GOOD_ENV.merge("x" => MessagePack::ExtensionValue.new(5, "x"))),
      "the timestamp ext type" => MessagePack.pack(GOOD_ENV.merge("x" => MessagePack::ExtensionValue.new(-1, "\x00\x00\x00\x01".b)))
    }.each do |what, bytes|
      error = fate(bytes)
      assert_equal "bad_encoding", error&.code, what
      refute_match(/strict_map_key|unpack\(b\)|codec|NoneType|FormatError/, error.reason, what)
    end
  end

  def test_a_bin_key_is_not_a_field_name
    env = GOOD_ENV.except("id").merge("id".b => "c1")
    assert_equal "bad_envelope", code(env)
    assert_match(/envelope\.id: required field is missing/, fate(env).reason)
    assert_nil code(GOOD_ENV.merge("note".b => "unknown keys pass, bin or not"))
  end

  def test_fields_of_the_wrong_type_or_range_are_bad_envelope
    {
      "schema missing" => GOOD_ENV.except("schema"),
      "version 0" => GOOD_ENV.merge("version" => 0),
      "version a string" => GOOD_ENV.merge("version" => "2"),
      "id empty" => GOOD_ENV.merge("id" => ""),
      "id 129 chars" => GOOD_ENV.merge("id" => "i" * 129),
      "id as bin" => GOOD_ENV.merge("id" => "c1".b),
      "publisher with a space" => GOOD_ENV.merge("publisher" => "my service"),
      "ts negative" => GOOD_ENV.merge("ts" => -1),
      "ts a float" => GOOD_ENV.merge("ts" => 1.5),
      "data not a map" => GOOD_ENV.merge("data" => [1]),
      "schema name upper case" => GOOD_ENV.merge("schema" => "Release")
    }.each { |what, env| assert_equal "bad_envelope", code(env), what }
  end

  def test_id_length_counts_characters_not_bytes_and_ts_takes_any_uint64
    assert_nil code(GOOD_ENV.merge("id" => "é" * 128)) # 256 bytes of UTF-8
    assert_nil code(GOOD_ENV.merge("ts" => 2**64 - 1))
  end

  def test_the_schema_codes
    assert_equal "unknown_schema", code(GOOD_ENV.merge("schema" => "nope"))
    assert_equal "unknown_version", code(GOOD_ENV.merge("version" => 9))
    assert_equal "schema_not_allowed", code(GOOD_ENV.merge("topic" => "instance.web"), topic: "instance.web")
    invalid = fate(GOOD_ENV.merge("data" => RELEASE.merge("env" => { "JAVA_OPTS" => 1 })))
    assert_equal "invalid", invalid.code
    assert_equal "data.env.JAVA_OPTS: expected string, got int", invalid.reason
  end

  def test_schema_checks_run_in_their_order
    nowhere = GOOD_ENV.merge("topic" => "instance.web", "version" => 9, "data" => {})
    assert_equal "unknown_version", code(nowhere, topic: "instance.web")
    assert_equal "schema_not_allowed", code(nowhere.merge("version" => 2), topic: "instance.web")
  end

  def test_a_disabled_key_refuses_before_schemas_but_after_the_envelope_checks
    write_rate("publisher.ruby-codes", "0")
    await_busd_rate("publisher.ruby-codes", 0.0)
    env = GOOD_ENV.merge("publisher" => "ruby-codes")
    assert_equal "disabled", code(env.merge("schema" => "nope"))
    assert_equal "disabled", code(env.merge("data" => {}))
    assert_equal "bad_envelope", code(env.merge("version" => 0))
    assert_equal "bad_encoding", code(MessagePack.pack(env) + "\x00".b)
    assert_equal "bad_topic", code(env.merge("topic" => "release.other"))
    error = fate(env)
    assert_instance_of Busd::Disabled, error
    assert_equal "publisher.ruby-codes", error.key
  ensure
    remove_rate("publisher.ruby-codes")
    await_busd_no_rate("publisher.ruby-codes")
  end
end
