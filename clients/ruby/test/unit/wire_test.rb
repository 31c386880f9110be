# frozen_string_literal: true

require "test_helper"

class WireTest < Minitest::Test
  def test_header_is_b_version_one_and_a_big_endian_seq
    assert_equal "B\x01\x00\x00\x00\x00\x00\x00\x01\x02".b, Busd::Wire.header(258)
    assert_equal 10, Busd::Wire.header(2**64 - 1).bytesize
  end

  def test_envelope_holds_the_seven_fields_with_string_keys
    env = MessagePack.unpack(Busd::Wire.encode_envelope(
                               "release.shop", "release", 2, { slug: "s", env: { "A" => "b" } },
                               id: "i1", publisher: "svc", ts: 5
                             ))
    assert_equal %w[topic schema version id publisher ts data], env.keys
    assert_equal({ "slug" => "s", "env" => { "A" => "b" } }, env["data"])
    assert_equal 5, env["ts"]
  end

  def test_binary_strings_go_out_as_msgpack_bin_and_utf8_strings_as_str
    bytes = Busd::Wire.encode_envelope("t", "s", 1, { "a" => "\xff".b, "b" => "é" },
                                       id: "i", publisher: "p", ts: 0)
    assert_includes bytes, "\xc4\x01\xff".b # bin 8, one byte
    assert_includes bytes, "\xa2\xc3\xa9".b # fixstr, two bytes of UTF-8
  end

  def test_a_message_decodes_with_every_envelope_field_and_its_raw_bytes
    bytes = Busd::Wire.encode_envelope("release.shop", "release", 2, { "slug" => "s" },
                                       id: "i1", publisher: "svc", ts: 1_700_000_000_123_456_789)
    msg = Busd::Wire.decode_message("release.shop".b, bytes)
    assert_equal ["release.shop", "release", 2, "i1", "svc"],
                 [msg.topic, msg.schema, msg.version, msg.id, msg.publisher]
    assert_equal({ "slug" => "s" }, msg.data)
    assert_equal bytes, msg.envelope
    assert_equal 123_456_789, msg.time.nsec
    assert msg.frozen?
    refute msg.to_h.key?(:envelope)
  end

  def test_symbolize_keys_gives_symbol_payload_keys
    bytes = Busd::Wire.encode_envelope("t", "s", 1, { "slug" => "x" }, id: "i", publisher: "p",
                                                                       ts: 0)
    assert_equal({ slug: "x" }, Busd::Wire.decode_message("t".b, bytes, symbolize_keys: true).data)
  end

  def test_messages_that_break_the_protocol_raise_decode_error
    good = { "topic" => "t", "schema" => "s", "version" => 1, "id" => "i", "publisher" => "p",
             "ts" => 0, "data" => {} }
    cases = {
      "not msgpack" => "\xc1".b,
      "trailing bytes" => MessagePack.pack(good) + "\x00".b,
      "not a map" => MessagePack.pack([1]),
      "field missing" => MessagePack.pack(good.except("ts")),
      "wrong type" => MessagePack.pack(good.merge("version" => "1")),
      "other topic" => MessagePack.pack(good.merge("topic" => "u")),
      "ext type" => "\xd4\x05\x00".b
    }
    cases.each do |what, bytes|
      assert_raises(Busd::DecodeError, what) { Busd::Wire.decode_message("t".b, bytes) }
    end
    assert_raises(Busd::DecodeError) { Busd::Wire.decode_message("\xff".b, MessagePack.pack(good)) }
  end
end
