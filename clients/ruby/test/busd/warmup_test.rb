# frozen_string_literal: true

require "test_helper"

# A busd started with a long --warmup: every publish is refused not_ready, after the header
# checks and before any judgement of the message (docs/protocol.md §2.3).
class WarmupTest < Minitest::Test
  include BusdTest

  def test_a_warming_busd_refuses_with_not_ready_and_says_when_it_ends
    pub = publisher(timeout: 0.5)
    error = assert_raises(Busd::NotReady) do
      pub.publish("release.shop", schema: "release", version: 2, data: RELEASE).result
    end
    assert_equal "not_ready", error.code
    assert_operator error.retry_after_ms, :>, 500 # past this publisher's timeout: not retried
  end

  def test_not_ready_comes_before_any_check_of_the_message
    pub = publisher(timeout: 0.5)
    big = MessagePack.pack({ "topic" => "bad topic", "data" => "x" * 70_000 })
    error = assert_raises(Busd::Rejected) { pub.publish_envelope("bad topic", big).result }
    assert_equal "not_ready", error.code
  end

  def test_a_header_that_cannot_be_read_is_still_bad_frame
    sock = Busd::Transport::Socket.new(ZMQ::DEALER, pub_endpoint)
    sock.set(ZMQ::LINGER, 0)
    sock.connect
    await("the raw DEALER connecting") { sock.poll(10, ZMQ::POLLOUT) }
    sock.send_frames(["B".b, "release.shop".b, "x".b])
    assert sock.poll(5000), "no reply"
    assert_equal [[nil, "bad_frame"]],
                 MessagePack.unpack(sock.recv_frame[0])["rej"].map { |r| [r["seq"], r["code"]] }
  ensure
    sock&.close
  end
end
