# frozen_string_literal: true

require "test_helper"

class RepliesTest < Minitest::Test
  def read(reply, last_seq = 10)
    Busd::Replies.read(MessagePack.pack(reply), last_seq)
  end

  def test_accepted_ranges_and_rejections_are_read_as_sent
    reply = read({ "acc" => [[1, 3], [5, 5]],
                   "rej" => [{ "seq" => 4, "code" => "invalid", "reason" => "r" }] })
    assert_equal [[1, 3], [5, 5]], reply.acc
    assert_equal [4], reply.rej.map(&:first)
    assert_equal 0, reply.bad
    refute reply.draining
  end

  def test_draining_is_true_only_for_true
    assert read({ "acc" => [], "rej" => [], "draining" => true }).draining
    refute read({ "acc" => [], "rej" => [], "draining" => 1 }).draining
  end

  def test_a_rejection_with_nil_seq_is_set_apart_unmatched
    reply = read({ "acc" => [], "rej" => [{ "seq" => nil, "code" => "bad_frame", "reason" => "" }] })
    assert_empty reply.rej
    assert_equal ["bad_frame"], reply.unnumbered.map { |r| r["code"] }
    assert_equal 0, reply.bad
  end

  def test_ranges_beyond_what_was_sent_are_dropped_whole_and_counted
    reply = read({ "acc" => [[1, 11], [0, 2], [3, 2], ["1", 2], [1], [2, 2]], "rej" => [] })
    assert_equal [[2, 2]], reply.acc
    assert_equal 5, reply.bad
  end

  def test_rejections_of_unknown_seqs_are_counted_and_one_without_a_code_stays_a_refusal
    reply = read({ "acc" => [], "rej" => [{ "seq" => 99, "code" => "x" }, "junk",
                                          { "seq" => 2, "code" => 5 }] })
    assert_equal [2], reply.rej.map(&:first)
    assert_equal 3, reply.bad
    assert_equal "internal", Busd.rejection_from(reply.rej[0][1]).code
  end

  def test_a_frame_that_is_not_a_msgpack_map_is_one_violation
    assert_equal 1, Busd::Replies.read("\xc1".b, 5).bad
    assert_equal 1, Busd::Replies.read(MessagePack.pack([1]), 5).bad
  end

  def test_each_code_gets_its_error_class_and_fields
    limited = Busd.rejection_from({ "seq" => 3, "code" => "rate_limited", "reason" => "r",
                                    "key" => "publish", "retry_after_ms" => 40 })
    assert_instance_of Busd::RateLimited, limited
    assert_equal ["publish", 40, 3], [limited.key, limited.retry_after_ms, limited.seq]
    disabled = Busd.rejection_from({ "seq" => 1, "code" => "disabled", "key" => "publish" })
    assert_instance_of Busd::Disabled, disabled
    assert_equal "publish", disabled.key
    not_ready = Busd.rejection_from({ "seq" => 1, "code" => "not_ready", "retry_after_ms" => 7 })
    assert_equal 7, not_ready.retry_after_ms
    other = Busd.rejection_from({ "seq" => 1, "code" => "some_new_code", "reason" => "why" })
    assert_instance_of Busd::Rejected, other
    assert_equal "some_new_code: why", other.message
    assert_kind_of Busd::Error, other
  end
end
