# frozen_string_literal: true

# Subscribe for an interop test: ruby -Ilib test/scripts/subscribe.rb '{"endpoint": ...}'
# Prints every message as one JSON line (its envelope fields, the envelope as hex) and ends
# after +count+ messages of +topic+, or when nothing came for +idle+ seconds.
require "busd"
require "json"

spec = JSON.parse(ARGV.fetch(0))
$stdout.sync = true
wanted = spec.fetch("count")
got = 0
Busd::Subscriber.open(spec.fetch("endpoint"), prefixes: spec.fetch("prefixes"), rcvhwm: 0) do |sub|
  sub.each(idle: spec.fetch("idle", 10.0)) do |msg|
    line = msg.to_h.transform_keys(&:to_s).merge("envelope" => msg.envelope.unpack1("H*"))
    puts JSON.generate(line)
    got += 1 if msg.topic == spec.fetch("topic")
    break if got >= wanted
  end
  puts JSON.generate({ "done" => got, "bad_messages" => sub.bad_messages })
end
