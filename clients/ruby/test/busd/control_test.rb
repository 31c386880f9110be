# frozen_string_literal: true

require "test_helper"

# Busd::Control against busd's control socket (docs/protocol.md §6).
class ControlTest < Minitest::Test
  include BusdTest

  def test_rates_set_list_and_clear
    set = control.set_rate("publish.release.ctl", 250, burst: 50)
    assert_equal ["publish.release.ctl", 250.0, 50.0], set.values_at("key", "rate", "burst")
    assert File.exist?(File.join(rates_dir, "publish.release.ctl"))
    limit = control.rates["limits"].find { |l| l["key"] == "publish.release.ctl" }
    assert_equal 50.0, limit["burst"]
    assert_equal({ "key" => "publish.release.ctl", "cleared" => true }, control.clear_rate("publish.release.ctl"))
    assert_equal false, control.clear_rate("publish.release.ctl")["cleared"]
  end

  def test_refusals_carry_a_stable_code
    error = assert_raises(Busd::ControlError) { control.set_rate("nope", 5) }
    assert_equal "bad_argument", error.code
    error = assert_raises(Busd::ControlError) { control.call("no.such") }
    assert_equal "unknown_command", error.code
    assert_match(/rates\.list/, error.message)
  end

  def test_stats_and_schema_replies_have_their_documented_shape
    publisher.publish("release.ctl", schema: "release", version: 2, data: RELEASE).result
    stats = control.stats
    assert_operator stats["broker"]["accepted"], :>=, 1
    assert_equal Busd::Codes::ALL.sort, stats["broker"]["rejected"].keys.sort
    %w[ingress egress rates control schemas].each { |section| assert_kind_of Hash, stats[section], section }
    rows = control.schemas["versions"]
    assert(rows.any? { |r| r["schema"] == "release" && r["version"] == 2 && r["status"] == "active" })
    assert_equal %w[errors loaded versions], control.reload_schemas.keys.sort
  end

  def test_over_32_connections_a_new_one_evicts_the_one_idle_the_longest
    open = Array.new(32) do
      Busd::Control.new(control_path).tap { |c| c.call("rates.list") }
    rescue Busd::ControlError => e
      flunk "connection refused early: #{e.message}"
    end
    # All 32 are idle: a 33rd is answered, and busd closes the one idle the longest
    # (busy only when all 32 have a request in progress; docs/protocol.md §6.1).
    stats = Busd::Control.open(control_path, &:stats)
    assert_operator stats["control"]["control_connections_evicted_total"], :>=, 1
    assert_equal 0, stats["control"]["control_connections_refused_total"]
  ensure
    open&.each(&:close)
  end

  def test_a_socket_nobody_serves_is_unavailable
    error = assert_raises(Busd::ControlUnavailable) { Busd::Control.new("/nonexistent/control.sock").stats }
    assert_equal "unavailable", error.code
  end
end
