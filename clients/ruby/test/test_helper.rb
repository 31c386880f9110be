# frozen_string_literal: true

require "minitest/autorun"
require "busd"
require "fileutils"
require "json"
require "tmpdir"

# What the tests share: the busd they run against (from BUSD_TEST_* variables, set by
# tests/test_ruby_client.py, which starts a real busd), waiting on conditions with a timeout,
# and a valid release v2 payload.
module BusdTest
  RELEASE = {
    "slug" => "https://apps.example/shop/releases/42",
    "cmd" => "bin/web",
    "env" => { "RACK_ENV" => "production" },
    "flag" => "extra_cpu"
  }.freeze

  def self.env(name)
    ENV.fetch(name) do
      raise "#{name} is not set: these tests run against a real busd. Run them with " \
            "`make test` (tests/test_ruby_client.py starts busd and sets BUSD_TEST_*)"
    end
  end

  def pub_endpoint = BusdTest.env("BUSD_TEST_PUB")
  def sub_endpoint = BusdTest.env("BUSD_TEST_SUB")
  def control_path = BusdTest.env("BUSD_TEST_CONTROL")
  def rates_dir = BusdTest.env("BUSD_TEST_RATES_DIR")

  def monotonic = Process.clock_gettime(Process::CLOCK_MONOTONIC)

  # Poll the block until it is truthy; fail after +timeout+ seconds.
  def await(what, timeout: 5.0, interval: 0.01)
    deadline = monotonic + timeout
    loop do
      value = yield
      return value if value
      flunk "timed out after #{timeout} s waiting for #{what}" if monotonic > deadline

      sleep interval
    end
  end

  def publisher(**options)
    pub = Busd::Publisher.new(pub_endpoint, name: "ruby-test", timeout: 5.0, **options)
    (@closing ||= []) << pub
    pub
  end

  def subscriber(*prefixes, **options)
    sub = Busd::Subscriber.new(sub_endpoint, prefixes: prefixes, **options)
    (@closing ||= []) << sub
    sub
  end

  def teardown
    (@closing || []).reverse_each(&:close)
    super
  end

  # The slow joiner: publish probes on +topic+ until +sub+ has one (its subscription then
  # reached busd), then drain what else arrived.
  def wait_subscribed(sub, topic = "release.probe", timeout: 5.0)
    probe = publisher(name: "probe")
    deadline = monotonic + timeout
    loop do
      probe.publish(topic, schema: "release", version: 2, data: RELEASE, id: "probe").result
      if sub.receive(timeout: 0.05)
        nil while sub.receive(timeout: 0.05)
        return
      end
      flunk "subscription to #{topic} never took effect" if monotonic > deadline
    end
  end

  # Write a rates file the way an operator does, and wait until +seen+ says it applies.
  def write_rate(key, content)
    File.write(File.join(rates_dir, key), content)
  end

  def remove_rate(key)
    FileUtils.rm_f(File.join(rates_dir, key))
  end

  def control
    @control ||= Busd::Control.new(control_path, timeout: 5.0).tap { |c| (@closing ||= []) << c }
  end

  # A rate limit of busd is in force once busd's own table shows it.
  def await_busd_rate(key, rate)
    await("busd applying #{key}=#{rate}") do
      control.rates["limits"].any? { |l| l["key"] == key && l["rate"] == rate }
    end
  end

  def await_busd_no_rate(key)
    await("busd dropping #{key}") { control.rates["limits"].none? { |l| l["key"] == key } }
  end
end
