# frozen_string_literal: true

require "test_helper"

# busd's rate limits seen from Ruby: the kill switch, rate_limited with retries that keep a
# topic's order, and the seed's idiom Busd.limit reading the same rates directory.
class RatesTest < Minitest::Test
  include BusdTest

  def teardown
    %w[publish publish.release.rl publish.release.order jobs].each { |key| remove_rate(key) }
    await_busd_no_rate("publish")
    await_busd_no_rate("publish.release.rl")
    await_busd_no_rate("publish.release.order")
    super
  end

  def test_echo_zero_into_the_publish_file_stops_every_publisher_until_it_is_removed
    pub = publisher
    write_rate("publish", "0\n")
    await_busd_rate("publish", 0.0)
    error = assert_raises(Busd::Disabled) do
      pub.publish("release.shop", schema: "release", version: 2, data: RELEASE).result
    end
    assert_equal ["disabled", "publish"], [error.code, error.key]
    remove_rate("publish")
    await_busd_no_rate("publish")
    pub.publish("release.shop", schema: "release", version: 2, data: RELEASE).result
  end

  def test_an_empty_bucket_is_rate_limited_with_its_key_and_when_to_retry
    write_rate("publish.release.rl", "1 1")
    await_busd_rate("publish.release.rl", 1.0)
    pub = publisher
    receipts = Array.new(3) { pub.publish("release.rl", schema: "release", version: 2, data: RELEASE) }
    pub.flush
    assert receipts[0].accepted?
    receipts[1..].each do |r|
      assert_instance_of Busd::RateLimited, r.error
      assert_equal "publish.release.rl", r.error.key
      assert_operator r.error.retry_after_ms, :>, 0
      assert_operator r.error.retry_after_ms, :<=, 1000
    end
  end

  # 4 messages/s with a burst of 1: the first of a pipelined burst passes, the others are
  # refused and retried; later publishes wait behind them. Everything arrives, in order.
  def test_retried_messages_arrive_in_publish_order_with_later_ones_held_behind_them
    write_rate("publish.release.order", "4 1")
    await_busd_rate("publish.release.order", 4.0)
    sub = subscriber("release.order", "release.probe-order")
    wait_subscribed(sub, "release.probe-order") # a probe topic the limit does not cover
    pub = publisher(retry_deadline: 10.0)
    first = Array.new(3) { |i| pub.publish("release.order", schema: "release", version: 2, data: RELEASE.merge("flag" => i.to_s)) }
    await("a refusal reaching the publisher") do
      pub.flush(timeout: 0.02) rescue Busd::PublishTimeout # reads the replies
      first.map(&:attempts).max > 1 || first.count(&:done?) == 3
    end
    later = Array.new(3) { |i| pub.publish("release.order", schema: "release", version: 2, data: RELEASE.merge("flag" => (i + 3).to_s)) }
    assert_empty pub.flush
    assert((first + later).all?(&:accepted?))
    flags = Array.new(6) { (sub.receive(timeout: 5) or flunk("a message is missing")).data["flag"] }
    assert_equal %w[0 1 2 3 4 5], flags
    assert_operator first[1].attempts, :>, 1
  end

  def test_busd_limit_reads_the_rates_directory_busd_reads
    limiter = Busd::RateLimiter.new(rates_dir)
    previous = Busd.rate_limiter
    Busd.rate_limiter = limiter
    write_rate("publish", "0")
    await_busd_rate("publish", 0.0)
    pub = publisher
    assert_raises(Busd::Disabled) do
      Busd.limit("publish", 10) { pub.publish("release.shop", schema: "release", version: 2, data: RELEASE) }
    end
    assert_equal 0, pub.pending # refused here: nothing was sent
    write_rate("publish", "0.1 1") # one token, then the next in 10 s
    await_busd_rate("publish", 0.1)
    limiter = Busd.rate_limiter = Busd::RateLimiter.new(rates_dir) # no wait for the re-read
    Busd.limit("publish", 10) { pub.publish("release.shop", schema: "release", version: 2, data: RELEASE).result }
    error = assert_raises(Busd::RateLimited) { Busd.limit("publish", 10, timeout: 1) { flunk "ran" } }
    assert_operator error.retry_after_ms, :>, 1000
    write_rate("jobs", "0") # a key of the service's own: busd reports and ignores the file
    assert_raises(Busd::Disabled) { limiter.limit("jobs", 5) { flunk "ran" } }
  ensure
    Busd.rate_limiter = previous
  end
end
