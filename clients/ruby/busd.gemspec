# frozen_string_literal: true

require_relative "lib/busd/version"

Gem::Specification.new do |spec|
  spec.name = "busd"
  spec.version = Busd::VERSION
  spec.summary = "A client of busd, the brokered publish/subscribe bus over ZeroMQ"
  spec.description = "Busd::Publisher (pipelined, every reply matched, typed errors per " \
                     "rejection code, rate-limit retries that keep a topic's order), " \
                     "Busd::Subscriber, Busd.limit with busd's rates-file grammar, and a " \
                     "client of busd's control socket."
  spec.authors = ["busd"]
  spec.license = "MIT"
  spec.required_ruby_version = ">= 3.1"
  spec.files = Dir["lib/**/*.rb"] + ["README.md"]
  spec.require_paths = ["lib"]

  # libzmq through ffi-rzmq: packaged by Debian (ruby-ffi-rzmq, with libzmq5), so a
  # Debian machine and CI get it from apt without a compiler or a gem download; it binds
  # libzmq's C functions directly, which the hot path calls. cztop is not in Debian and
  # adds CZMQ on top of libzmq, which this protocol does not need.
  spec.add_dependency "ffi-rzmq", "~> 2.0"
  # msgpack's own gem (Debian: ruby-msgpack), the C extension.
  spec.add_dependency "msgpack", ">= 1.4"
  spec.add_development_dependency "minitest", "~> 5.15"
end
