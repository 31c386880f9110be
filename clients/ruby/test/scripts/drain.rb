# frozen_string_literal: true

# The publisher side of the drain test (tests/test_ruby_client.py), told each step on stdin:
# connect and say "connected"; on "go" publish +count+ messages at once and say "sent"; on
# "flush" wait for every fate and print them as one JSON line.
require "busd"
require "json"

spec = JSON.parse(ARGV.fetch(0))
$stdout.sync = true
data = spec.fetch("data")
pub = Busd::Publisher.new(spec.fetch("endpoint"), name: "ruby-drain", window: 20_000,
                                                  timeout: spec.fetch("timeout"))
pub.publish("release.drain", schema: "release", version: 2, data: data).result
puts "connected"
$stdin.gets
receipts = Array.new(spec.fetch("count")) do
  pub.publish("release.drain", schema: "release", version: 2, data: data)
end
puts "sent"
$stdin.gets
pub.flush
fates = Hash.new(0)
receipts.each do |r|
  key = r.accepted? ? "accepted" : "#{r.error.class.name}:#{r.error.respond_to?(:code) ? r.error.code : r.error.sent?}"
  fates[key] += 1
end
puts JSON.generate({ "fates" => fates, "draining" => pub.draining? })
pub.close(timeout: 0)
