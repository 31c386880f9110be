# frozen_string_literal: true

module Busd
  # A key file is missing or not a ZeroMQ certificate; the message names the file.
  class KeyFileError < ArgumentError; end

  # A client's CURVE key pair and busd's public key (z85), for a busd with authentication
  # on (docs/security.md, docs/protocol.md §7). The files are ZeroMQ certificates as
  # <tt>busdctl keys new NAME</tt> writes them: the client keeps NAME.key_secret, busd's
  # public key is server.key.
  #
  # A publisher or subscriber takes +keys:+; by default it reads BUSD_KEY (the client's
  # .key_secret file) and BUSD_SERVER_KEY (busd's .key file) from the environment, as the
  # Python client does. Without keys a client speaks ZeroMQ's NULL mechanism, which a busd
  # with authentication on refuses in the handshake.
  Keys = Struct.new(:public, :secret, :server) do
    def self.load(key, server_key)
      public, secret = read(key)
      raise KeyFileError, "#{key}: holds no secret key (give the .key_secret file)" unless secret

      new(public, secret, read(server_key)[0]).freeze
    end

    # The keys named by BUSD_KEY and BUSD_SERVER_KEY; nil when neither is set.
    def self.from_env(env = ENV)
      key = env["BUSD_KEY"].to_s
      server = env["BUSD_SERVER_KEY"].to_s
      return nil if key.empty? && server.empty?
      raise KeyFileError, "set both BUSD_KEY and BUSD_SERVER_KEY, or neither" if key.empty? || server.empty?

      load(key, server)
    end

    # [public, secret or nil] from a ZeroMQ certificate file (ZPL: public-key = "..." and
    # secret-key = "..." under curve).
    def self.read(path)
      found = {}
      File.foreach(path.to_s) do |line|
        match = /\A\s*(public|secret)-key\s*=\s*"([^"]*)"\s*\z/.match(line.chomp)
        found[match[1]] = match[2].b if match
      end
      raise KeyFileError, "#{path}: no public-key line" unless found["public"]&.bytesize == 40

      [found["public"], found["secret"]]
    rescue SystemCallError => e
      raise KeyFileError, "#{path}: not a readable key certificate: #{e.message}"
    end

    # Make +sock+ a CURVE client of busd (before it connects).
    def apply(sock)
      sock.set_bytes(ZMQ::CURVE_SERVERKEY, server)
      sock.set_bytes(ZMQ::CURVE_PUBLICKEY, public)
      sock.set_bytes(ZMQ::CURVE_SECRETKEY, secret)
    end
  end
end
