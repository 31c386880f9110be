# frozen_string_literal: true

require "test_helper"

# The publisher's bookkeeping driven with real reply frames (msgpack, as busd encodes them)
# and a time the test chooses: which messages go out, in which order, and how each ends.
class InFlightTest < Minitest::Test
  def setup
    @book = Busd::InFlight.new(5.0)
    @order = 0
    @sent = []
  end

  def receipt(topic = "a", retry_for: 10.0, wait_disabled: false, now: 0.0)
    @order += 1
    Busd::Receipt.new(nil, topic, topic.b, "env".b, "id#{@order}", order: @order,
                                                               retry_until: retry_for ? now + retry_for : 0.0,
                                                               hold_until: now + [5.0, retry_for || 0].max,
                                                               wait_disabled: wait_disabled)
  end

  # What the publisher does with a new message: hold it behind its topic, or send it.
  def publish(r, now = 0.0)
    @book.held?(r.topic) ? @book.hold(r, now) : send_it(r, now)
    r
  end

  def send_it(r, now)
    @sent << [r.id, @book.next_seq]
    @book.sent(r, now)
  end

  def reply(now, acc: [], rej: [], draining: false)
    frame = { "acc" => acc, "rej" => rej }
    frame["draining"] = true if draining
    @book.on_reply(MessagePack.pack(frame), now)
  end

  def limited(seq, ms = 100)
    { "seq" => seq, "code" => "rate_limited", "reason" => "r", "key" => "publish",
      "retry_after_ms" => ms }
  end

  def pump(now)
    @book.expire(now)
    @book.due_sends(now).each { |r| send_it(r, now) }
  end

  def test_an_accepted_range_settles_its_messages
    rs = Array.new(3) { publish(receipt) }
    reply(0.0, acc: [[1, 3]])
    assert rs.all?(&:accepted?)
    assert_equal 0, @book.count
  end

  def test_a_rate_limited_message_is_sent_again_after_retry_after_ms_with_a_new_seq
    r = publish(receipt)
    reply(0.0, rej: [limited(1, 100)])
    refute r.done?
    pump(0.05)
    assert_equal 1, @sent.size
    pump(0.1)
    assert_equal ["id1", 2], @sent.last
    reply(0.1, acc: [[2, 2]])
    assert r.accepted?
    assert_equal 2, r.attempts
  end

  def test_later_messages_of_the_topic_wait_behind_a_refused_one_and_go_in_order
    first = publish(receipt("a"))
    reply(0.0, rej: [limited(1, 100)])
    later = Array.new(3) { publish(receipt("a")) }
    other = publish(receipt("b"))
    assert_equal %w[id1 id5], @sent.map(&:first) # "b" is not held; "a"'s later ones are
    pump(0.1)
    assert_equal "id1", @sent.last[0]
    pump(0.2)
    assert_equal 3, @sent.size # one message of the held topic in flight at a time
    reply(0.2, acc: [[3, 3]])
    assert first.accepted?
    pump(0.2)
    assert_equal "id2", @sent.last[0]
    reply(0.2, acc: [[4, 4]])
    pump(0.2)
    reply(0.2, acc: [[5, 5]])
    pump(0.2)
    reply(0.2, acc: [[2, 2], [6, 6]])
    assert(later.all?(&:accepted?))
    assert other.accepted?
    assert_equal %w[id1 id5 id1 id2 id3 id4], @sent.map(&:first)
    refute @book.held?("a")
    publish(receipt("a"))
    assert_equal "id6", @sent.last[0] # the topic is pipelined again
  end

  def test_a_held_message_refused_again_keeps_its_place_and_its_successors_wait
    first = publish(receipt("a"))
    reply(0.0, rej: [limited(1, 100)])
    second = publish(receipt("a"))
    pump(0.1)
    reply(0.1, rej: [limited(2, 100)]) # the retry is refused too
    pump(0.2)
    reply(0.2, acc: [[3, 3]])
    pump(0.2)
    reply(0.2, acc: [[4, 4]])
    assert first.accepted?
    assert second.accepted?
    assert_equal %w[id1 id1 id1 id2], @sent.map(&:first)
    refute @book.held?("a")
  end

  def test_a_message_refused_while_already_in_flight_joins_the_queue_in_publish_order
    rs = Array.new(3) { publish(receipt) }
    reply(0.0, acc: [[2, 2]], rej: [limited(1, 10), limited(3, 10)])
    assert rs[1].accepted? # on the wire before the refusal was known: it went ahead
    pump(0.01)
    reply(0.01, acc: [[4, 4]])
    pump(0.01)
    reply(0.01, acc: [[5, 5]])
    assert rs.all?(&:accepted?)
    assert_equal %w[id1 id2 id3 id1 id3], @sent.map(&:first)
  end

  def test_past_its_retry_deadline_a_refusal_is_final_and_the_next_message_goes
    first = publish(receipt("a", retry_for: 0.5))
    reply(0.0, rej: [limited(1, 100)])
    second = publish(receipt("a"))
    pump(0.1)
    reply(0.1, rej: [limited(2, 1000)]) # the retry would be due past the deadline
    assert_instance_of Busd::RateLimited, first.error
    pump(0.1)
    assert_equal "id2", @sent.last[0]
    reply(0.1, acc: [[3, 3]])
    assert second.accepted?
  end

  def test_without_a_retry_deadline_a_rate_limited_message_fails_at_once
    r = publish(receipt(retry_for: nil))
    reply(0.0, rej: [limited(1)])
    assert_equal "rate_limited", r.error.code
    refute @book.held?("a")
  end

  def test_disabled_is_retried_every_quarter_second_only_when_asked
    plain = publish(receipt("a"))
    waiting = publish(receipt("b", wait_disabled: true))
    disabled = ->(seq) { { "seq" => seq, "code" => "disabled", "key" => "publish" } }
    reply(0.0, rej: [disabled.call(1), disabled.call(2)])
    assert_instance_of Busd::Disabled, plain.error
    refute waiting.done?
    pump(0.2)
    assert_equal 2, @sent.size
    pump(0.25)
    assert_equal ["id2", 3], @sent.last
  end

  def test_not_ready_is_retried_within_the_reply_timeout
    r = publish(receipt(retry_for: nil))
    reply(0.0, rej: [{ "seq" => 1, "code" => "not_ready", "retry_after_ms" => 1000 }])
    refute r.done?
    pump(1.0)
    reply(1.0, acc: [[2, 2]])
    assert r.accepted?
    late = publish(receipt("c", retry_for: nil, now: 1.0), 1.0)
    reply(1.0, rej: [{ "seq" => 3, "code" => "not_ready", "retry_after_ms" => 9000 }])
    assert_instance_of Busd::NotReady, late.error
  end

  def test_no_reply_within_the_timeout_is_a_publish_timeout_of_unknown_fate
    r = publish(receipt)
    pump(4.9)
    refute r.done?
    pump(5.0)
    assert_instance_of Busd::PublishTimeout, r.error
    assert r.error.sent?
    reply(5.1, acc: [[1, 1]]) # a late answer changes nothing
    refute r.accepted?
  end

  def test_a_held_message_past_its_deadline_fails_unsent
    publish(receipt("a", retry_for: 20.0))
    reply(0.0, rej: [limited(1, 19_000)])
    held = publish(receipt("a", retry_for: nil))
    pump(19.0)
    reply(19.0, acc: [[2, 2]])
    pump(19.0)
    assert_instance_of Busd::PublishTimeout, held.error
    refute held.error.sent?
  end

  def test_unnumbered_rejections_and_bad_replies_are_counted_and_settle_nothing
    r = publish(receipt)
    reply(0.0, rej: [{ "seq" => nil, "code" => "bad_frame", "reason" => "x" }],
               acc: [[1, 9]])
    assert_equal 1, @book.unnumbered
    assert_equal 1, @book.bad_replies
    refute r.done?
  end

  def test_draining_follows_the_latest_reply
    publish(receipt)
    reply(0.0, acc: [[1, 1]], draining: true)
    assert @book.draining?
  end

  def test_close_fails_everything_pending_with_closed_error
    publish(receipt("a"))
    reply(0.0, rej: [limited(1)])
    held = publish(receipt("a"))
    other = publish(receipt("b"))
    @book.close(0.0)
    assert_instance_of Busd::ClosedError, held.error
    assert_instance_of Busd::ClosedError, other.error
    assert_equal 3, @book.take_failures.size
    assert_equal 0, @book.count
  end
end
