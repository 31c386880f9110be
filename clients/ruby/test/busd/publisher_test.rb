# frozen_string_literal: true

require "test_helper"

# Busd::Publisher and Busd::Subscriber against a real busd.
class PublisherTest < Minitest::Test
  include BusdTest

  def test_a_published_message_reaches_a_subscriber_with_every_envelope_field
    sub = subscriber("release.")
    wait_subscribed(sub)
    pub = publisher
    receipt = pub.publish("release.shop", schema: "release", version: 2,
                                          data: { slug: RELEASE["slug"], cmd: "bin/web", env: { "RACK_ENV" => "production" } })
    assert_same receipt, receipt.result
    assert receipt.accepted?
    msg = sub.receive(timeout: 5)
    assert_equal ["release.shop", "release", 2, receipt.id, "ruby-test"],
                 [msg.topic, msg.schema, msg.version, msg.id, msg.publisher]
    assert_equal "bin/web", msg.data["cmd"]
    assert_in_delta Time.now.to_f, msg.time.to_f, 60
    assert_equal msg, Busd::Wire.decode_message(msg.topic.b, msg.envelope)
  end

  def test_ten_thousand_pipelined_messages_are_accepted_and_arrive_in_order
    count = 10_000
    sub = subscriber("release.bulk", rcvhwm: 0)
    wait_subscribed(sub, "release.bulk.probe")
    got = []
    reader = Thread.new do
      while got.size < count && (msg = sub.receive(timeout: 10))
        got << msg.data["flag"].to_i
      end
    end
    pub = publisher(window: 1000)
    receipts = Array.new(count) do |i|
      pub.publish("release.bulk", schema: "release", version: 2, data: RELEASE.merge("flag" => i.to_s))
    end
    assert_empty pub.flush
    assert receipts.all?(&:accepted?)
    assert_equal count, receipts.map(&:seq).uniq.size
    assert reader.join(30), "subscriber still reading"
    assert_equal (0...count).to_a, got
  end

  def test_replies_are_matched_to_their_messages_when_fates_interleave
    pub = publisher
    receipts = Array.new(200) do |i|
      data = i.odd? ? RELEASE.merge("cmd" => 5) : RELEASE
      pub.publish("release.mixed", schema: "release", version: 2, data: data)
    end
    failures = pub.flush
    assert_equal 100, failures.size
    receipts.each_with_index do |r, i|
      if i.odd?
        assert_equal "invalid", r.error.code
        assert_equal r.id, r.error.id
        assert_equal "release.mixed", r.error.topic
        assert_match(/data\.cmd/, r.error.reason)
      else
        assert r.accepted?, r.inspect
      end
    end
  end

  def test_an_error_raised_by_result_is_not_returned_again_by_flush
    pub = publisher
    bad = pub.publish("release.x", schema: "release", version: 2, data: {})
    pub.publish("release.x", schema: "release", version: 2, data: { "cmd" => 1 })
    assert_raises(Busd::Rejected) { bad.result }
    assert_equal 1, pub.flush.size
    assert_empty pub.flush
  end

  def test_without_busd_a_publish_times_out_unsent
    server = TCPServer.new("127.0.0.1", 0)
    port = server.addr[1]
    server.close # a port nobody listens on
    pub = Busd::Publisher.new("tcp://127.0.0.1:#{port}", timeout: 0.3)
    error = assert_raises(Busd::PublishTimeout) do
      pub.publish("release.shop", schema: "release", version: 2, data: RELEASE)
    end
    refute error.sent?
    assert_match(/no connection/, error.message)
    assert_empty pub.close
  end

  def test_a_closed_publisher_refuses_to_publish
    pub = publisher
    pub.publish("release.shop", schema: "release", version: 2, data: RELEASE)
    assert_empty pub.close
    assert pub.closed?
    assert_raises(Busd::ClosedError) do
      pub.publish("release.shop", schema: "release", version: 2, data: RELEASE)
    end
  end

  def test_an_envelope_over_the_frame_limit_is_refused_before_it_is_sent
    pub = publisher(max_envelope_bytes: 1000)
    error = assert_raises(Busd::Rejected) do
      pub.publish("release.shop", schema: "release", version: 2,
                                  data: RELEASE.merge("cmd" => "x" * 2000))
    end
    assert_equal "too_large", error.code
    assert error.local?
    assert_equal 0, pub.pending
  end

  def test_threads_share_one_publisher_and_keep_their_own_order
    sub = subscriber("release.threads", rcvhwm: 0)
    wait_subscribed(sub, "release.threads.probe")
    pub = publisher(window: 100)
    threads = Array.new(4) do |t|
      Thread.new do
        Array.new(500) do |i|
          pub.publish("release.threads.#{t}", schema: "release", version: 2,
                                              data: RELEASE.merge("flag" => i.to_s))
        end
      end
    end
    receipts = threads.flat_map(&:value)
    assert_empty pub.flush
    assert receipts.all?(&:accepted?)
    seen = Hash.new { |h, k| h[k] = [] }
    2000.times do
      msg = sub.receive(timeout: 10) or flunk "only #{seen.values.sum(&:size)} of 2000 arrived"
      seen[msg.topic] << msg.data["flag"].to_i
    end
    assert_equal 4, seen.size
    seen.each_value { |flags| assert_equal (0...500).to_a, flags }
  end

  def test_a_forked_child_cannot_use_its_parents_publisher
    pub = publisher
    pub.publish("release.shop", schema: "release", version: 2, data: RELEASE).result
    reader, writer = IO.pipe
    pid = fork do
      reader.close
      begin
        pub.publish("release.shop", schema: "release", version: 2, data: RELEASE)
        writer.write("published")
      rescue Busd::ClosedError => e
        writer.write(e.message)
      end
      writer.close
      exit!(0)
    end
    writer.close
    said = reader.read
    Process.wait(pid)
    assert_match(/make a new one after fork/, said)
    pub.publish("release.shop", schema: "release", version: 2, data: RELEASE).result
  end

  def test_the_process_publisher_is_made_from_its_configuration
    Busd.configure(endpoint: pub_endpoint, name: "ruby-default", timeout: 5.0)
    receipt = Busd.publish("release.shop", schema: "release", version: 2, data: RELEASE)
    receipt.result
    assert_equal "ruby-default", Busd.publisher.name
    assert_same Busd.publisher, Busd.publisher
  ensure
    Busd.publisher.close
  end

  def test_unknown_envelope_keys_reach_subscribers_byte_for_byte_and_unsubscribe_stops_delivery
    sub = subscriber("release.odd")
    wait_subscribed(sub, "release.odd.probe")
    pub = publisher
    extra = MessagePack.pack({ "topic" => "release.odd", "schema" => "release", "version" => 2,
                               "id" => "x", "publisher" => "p", "ts" => 0, "data" => RELEASE,
                               "note" => "extra keys pass through" })
    pub.publish_envelope("release.odd", extra).result
    msg = sub.receive(timeout: 5)
    assert_equal "x", msg.id
    assert_equal extra, msg.envelope
    sub.unsubscribe("release.odd")
    await("unsubscribe reaching busd") do
      pub.publish("release.odd", schema: "release", version: 2, data: RELEASE).result
      sub.receive(timeout: 0.05).nil? && sub.receive(timeout: 0.1).nil?
    end
    assert_equal 0, sub.bad_messages
  end

  def test_each_yields_until_the_subscriber_is_idle
    sub = subscriber("release.each")
    wait_subscribed(sub, "release.each.probe")
    pub = publisher
    3.times { |i| pub.publish("release.each", schema: "release", version: 2, data: RELEASE.merge("flag" => i.to_s)) }
    assert_empty pub.flush
    assert_equal %w[0 1 2], sub.each(idle: 1.0).map { |m| m.data["flag"] }
  end
end
