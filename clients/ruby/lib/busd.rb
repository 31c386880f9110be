# frozen_string_literal: true

# A Ruby client of busd, the brokered publish/subscribe bus (docs/protocol.md).
#
#   require "busd"
#   bus = Busd::Publisher.new("tcp://127.0.0.1:7401", name: "deployer")
#   Busd.limit("publish", 10) do
#     bus.publish("release.shop", schema: "release", version: 2, data: release).result
#   end
#   bus.close
require "io/wait"
require_relative "busd/version"
require_relative "busd/codes"
require_relative "busd/errors"
require_relative "busd/wire"
require_relative "busd/replies"
require_relative "busd/transport"
require_relative "busd/keys"
require_relative "busd/receipt"
require_relative "busd/in_flight"
require_relative "busd/publisher"
require_relative "busd/subscriber"
require_relative "busd/rates"
require_relative "busd/rate_limiter"
require_relative "busd/control"

module Busd
  class << self
    # The process's publisher, made on first use from BUSD_PUB_ENDPOINT and BUSD_PUBLISHER
    # (see Publisher.new), again in a child after a fork, flushed and closed at exit.
    def publisher
      pub = @publisher
      return pub if pub && !pub.closed? && @publisher_pid == Process.pid

      @publisher_lock.synchronize do
        if @publisher.nil? || @publisher.closed? || @publisher_pid != Process.pid
          options = (@publisher_options || {}).dup
          endpoint = options.delete(:endpoint)
          @publisher = endpoint ? Publisher.new(endpoint, **options) : Publisher.new(**options)
          @publisher_pid = Process.pid
        end
        @publisher
      end
    end

    # Options for the process's publisher (Publisher.new's keywords, and +endpoint:+); call
    # before the first Busd.publish.
    def configure(endpoint: nil, **options)
      @publisher_options = endpoint ? options.merge(endpoint: endpoint) : options
      self
    end

    # Busd.publisher.publish(...): returns the Receipt.
    def publish(topic, **kwargs)
      publisher.publish(topic, **kwargs)
    end
  end

  @publisher_lock = Mutex.new
  Transport.before_exit do
    pub = @publisher
    pub.close if pub && @publisher_pid == Process.pid && !pub.closed?
  end
end
