# frozen_string_literal: true

require "test_helper"

# A busd whose schemas directory marks release v1 retired.
class RetiredTest < Minitest::Test
  include BusdTest

  def test_a_retired_version_is_refused_and_the_active_one_accepted
    pub = publisher
    v1 = RELEASE.except("flag")
    error = assert_raises(Busd::Rejected) do
      pub.publish("release.shop", schema: "release", version: 1, data: v1).result
    end
    assert_equal "retired_version", error.code
    assert_match(/release v1 is retired/, error.reason)
    pub.publish("release.shop", schema: "release", version: 2, data: RELEASE).result
  end
end
