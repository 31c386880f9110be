# frozen_string_literal: true

require "test_helper"

# A busd with authentication on (CURVE, a keys directory, a permissions file granting
# ruby-svc the prefix "release."): BUSD_TEST_KEY and BUSD_TEST_SERVER_KEY name the files.
class TrustTest < Minitest::Test
  include BusdTest

  def keys
    Busd::Keys.load(BusdTest.env("BUSD_TEST_KEY"), BusdTest.env("BUSD_TEST_SERVER_KEY"))
  end

  def test_a_client_with_its_key_publishes_and_subscribes_under_its_identity
    sub = subscriber("release.", keys: keys)
    pub = publisher(name: "ruby-svc", keys: keys)
    deadline = monotonic + 10
    until (msg = sub.receive(timeout: 0.05)) # the slow joiner: a probe until one arrives
      flunk "nothing arrived" if monotonic > deadline
      pub.publish("release.shop", schema: "release", version: 2, data: RELEASE).result
    end
    assert_equal "ruby-svc", msg.publisher
  end

  def test_publishing_under_another_name_or_outside_the_grant_is_forbidden
    pub = publisher(name: "someone-else", keys: keys)
    error = assert_raises(Busd::Rejected) do
      pub.publish("release.shop", schema: "release", version: 2, data: RELEASE).result
    end
    assert_equal "forbidden", error.code
    assert_match(/ruby-svc/, error.reason)
    own = publisher(name: "ruby-svc", keys: keys)
    error = assert_raises(Busd::Rejected) do
      own.publish("instance.web", schema: "instance-state", version: 1, data: {}).result
    end
    assert_equal "forbidden", error.code
  end

  def test_without_a_key_the_handshake_fails_and_nothing_is_sent
    pub = publisher(keys: nil, timeout: 0.5)
    error = assert_raises(Busd::PublishTimeout) do
      pub.publish("release.shop", schema: "release", version: 2, data: RELEASE)
    end
    refute error.sent?
  end

  def test_keys_come_from_the_environment_like_the_python_clients
    env = { "BUSD_KEY" => BusdTest.env("BUSD_TEST_KEY"),
            "BUSD_SERVER_KEY" => BusdTest.env("BUSD_TEST_SERVER_KEY") }
    assert_equal keys, Busd::Keys.from_env(env)
    assert_nil Busd::Keys.from_env({})
    assert_raises(Busd::KeyFileError) { Busd::Keys.from_env({ "BUSD_KEY" => "x" }) }
    assert_raises(Busd::KeyFileError) { Busd::Keys.load(BusdTest.env("BUSD_TEST_SERVER_KEY"), BusdTest.env("BUSD_TEST_SERVER_KEY")) }
  end
end
