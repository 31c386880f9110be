# frozen_string_literal: true

# The Ruby publisher of `make bench` (bench/ruby_publisher.py): the bench.worker protocol
# (docs in bench/worker.py) spoken by Busd::Publisher, the way a Ruby service publishes.
#   ruby -I clients/ruby/lib bench/ruby_worker.rb '<json spec>'
# Warm-up messages on its own topic until "go" on stdin; then flat-out for +duration+
# seconds (or +count+ messages); then a flush; one JSON result line; "exit" closes.
require "busd"
require "json"

spec = JSON.parse(ARGV.fetch(0))
$stdout.sync = true
go = Queue.new
leave = Queue.new
Thread.new do
  $stdin.each_line do |line|
    case line.strip
    when "go" then go << true
    when "exit" then leave << true
    end
  end
  go << true
  leave << true
end

# bench/message.py's release v2 message, a fresh id and ts per message.
data = { "slug" => "https://apps.example/shop/releases/42", "cmd" => "bin/web",
         "env" => { "RACK_ENV" => "production" }, "flag" => "extra_cpu" }
topic = "release.shop"
warm = "release.warmup.#{spec.fetch("index")}"
pub = Busd::Publisher.new(spec.fetch("endpoint"), name: spec.fetch("publisher", "bench"),
                                                  timeout: 15.0)
while go.empty?
  pub.publish(warm, schema: "release", version: 2, data: data)
  begin
    pub.flush(timeout: 0.02)
  rescue Busd::PublishTimeout
    nil # still in flight: the next round reads it
  end
end
pub.flush(timeout: 15.0) # warm-up fates are not part of the measurement

clock = -> { Process.clock_gettime(Process::CLOCK_MONOTONIC, :nanosecond) }
cpu = -> { Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID) } # all threads
count = spec["count"]
duration_ns = (spec.fetch("duration", 1.0) * 1e9).to_i
sent = 0
cpu0 = cpu.call
t0 = clock.call
loop do
  if count
    break if sent >= count
  elsif clock.call - t0 >= duration_ns
    break
  end
  n = count ? [100, count - sent].min : 100
  n.times { pub.publish(topic, schema: "release", version: 2, data: data) }
  sent += n
end
t_end = clock.call
failures = pub.flush
rejected = Hash.new(0)
unanswered = 0
failures.each do |error|
  if error.is_a?(Busd::PublishTimeout)
    unanswered += 1
  else
    rejected[error.respond_to?(:code) ? error.code : error.class.name] += 1
  end
end
puts JSON.generate({ "sent" => sent, "t_start" => t0, "t_end" => t_end,
                     "cpu_s" => cpu.call - cpu0, "failures" => failures.size,
                     "rejected" => rejected, "unanswered" => unanswered })
leave.pop # "exit", or stdin closed by a controller that went away
pub.close(timeout: 0.1)
