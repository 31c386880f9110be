# frozen_string_literal: true

# Publish for an interop test: ruby -Ilib test/scripts/publish.rb '{"endpoint": ..., ...}'
# Sends +count+ release v2 messages on +topic+ (data.flag = the message's index), flushes,
# and prints one JSON line: the ids in publish order, and the failures.
require "busd"
require "json"

spec = JSON.parse(ARGV.fetch(0))
data = spec.fetch("data")
Busd::Publisher.open(spec.fetch("endpoint"), name: spec.fetch("name"),
                                            window: spec.fetch("window", 1000)) do |pub|
  receipts = Array.new(spec.fetch("count")) do |i|
    pub.publish(spec.fetch("topic"), schema: "release", version: 2,
                                     data: data.merge("flag" => i.to_s))
  end
  failures = pub.flush(timeout: 60)
  puts JSON.generate({ "ids" => receipts.map(&:id), "accepted" => receipts.count(&:accepted?),
                       "failures" => failures.map { |e| [e.class.name, e.message] } })
end
