# frozen_string_literal: true

require "ffi-rzmq"
require "monitor"

module Busd
  # ZeroMQ sockets through the ffi-rzmq binding's libzmq functions (LibZMQ), with every
  # option set explicitly rather than trusting libzmq's defaults. The hot path calls
  # zmq_send/zmq_msg_recv directly on a reused zmq_msg_t: no Ruby object per frame.
  module Transport
    DONTWAIT = ZMQ::DONTWAIT
    SNDMORE_DONTWAIT = ZMQ::SNDMORE | ZMQ::DONTWAIT
    EAGAIN = ZMQ::EAGAIN
    EINTR = ZMQ::EINTR

    # One libzmq context per process, created on first use and terminated at exit after the
    # sockets still open are closed: exiting with libzmq's I/O thread still running can crash
    # in its static destructors. A context cannot cross a fork: a child makes its own.
    @lock = Monitor.new # reentrant: a finalizer may run while this thread holds it
    @open = {} # socket state => true: the sockets of this process's context still open
    @exit_hooks = []

    class << self
      def context
        @lock.synchronize do
          if @context_pid != Process.pid
            @context_pid = Process.pid
            @open = {}
            @context = LibZMQ.zmq_ctx_new
            raise Error, "zmq_ctx_new failed: #{ZMQ::Util.error_string}" if @context.null?

            # Registered now, not at load: handlers run last-registered first, and this one
            # must come after every earlier one that may still publish (minitest runs its
            # tests in an at_exit handler, for one).
            pid = Process.pid
            at_exit { terminate if Process.pid == pid }
          end
          @context
        end
      end

      # Run +hook+ at exit before the sockets are closed (the default publisher's flush).
      def before_exit(&hook)
        @lock.synchronize { @exit_hooks << hook }
      end

      def opened(state)
        @lock.synchronize { @open[state] = true }
      end

      # Close the socket in +state+ (once), in the process that opened it.
      def close_socket(state)
        @lock.synchronize do
          ptr = state[0]
          state[0] = nil
          @open.delete(state)
          LibZMQ.zmq_close(ptr) if ptr && state[1] == Process.pid
        end
      end

      # A finalizer that closes a socket its owner forgot.
      def closer(state)
        proc { close_socket(state) }
      end

      def terminate
        hooks = @lock.synchronize { @exit_hooks.dup }
        hooks.each(&:call)
        @lock.synchronize do
          @open.keys.each { |state| close_socket(state) }
          LibZMQ.zmq_ctx_term(@context) if @context_pid == Process.pid
          @context_pid = nil
        end
      end
    end

    # One socket, used by one thread at a time.
    class Socket
      attr_reader :endpoint

      def initialize(type, endpoint)
        ptr = LibZMQ.zmq_socket(Transport.context, type)
        raise Error, "zmq_socket failed: #{ZMQ::Util.error_string}" if ptr.null?

        @state = [ptr, Process.pid] # the pointer (nil once closed) and its process
        Transport.opened(@state)
        @endpoint = endpoint
        @msg = FFI::MemoryPointer.new(LibZMQ::Message.size)
        LibZMQ.zmq_msg_init(@msg)
        @poll_item = LibZMQ::PollItem.new
        @poll_item[:socket] = ptr
        @int = FFI::MemoryPointer.new(:int)
        ObjectSpace.define_finalizer(self, Transport.closer(@state))
      end

      def set(option, value)
        @int.write_int(value)
        check(LibZMQ.zmq_setsockopt(live, option, @int, 4), "zmq_setsockopt(#{option})")
      end

      def set_bytes(option, value)
        check(LibZMQ.zmq_setsockopt(live, option, value, value.bytesize), "zmq_setsockopt")
      end

      def connect
        check(LibZMQ.zmq_connect(live, @endpoint), "connect to #{@endpoint}")
      end

      # Hand the frames of one message to libzmq without blocking. False when the socket
      # cannot take it now (no connection yet, or the high-water mark): libzmq then keeps
      # none of its frames. Once the first frame is taken, libzmq takes the rest.
      def send_frames(frames)
        last = frames.size - 1
        frames.each_with_index do |frame, i|
          flags = i == last ? DONTWAIT : SNDMORE_DONTWAIT
          next if LibZMQ.zmq_send(live, frame, frame.bytesize, flags) >= 0
          return false if i.zero? && ZMQ::Util.errno == EAGAIN

          raise_error("zmq_send")
        end
        true
      end

      # +send_frames+ for the three frames of a publish, without an Array per message.
      def send3(header, topic, envelope)
        ptr = live
        if LibZMQ.zmq_send(ptr, header, header.bytesize, SNDMORE_DONTWAIT).negative?
          return false if ZMQ::Util.errno == EAGAIN

          raise_error("zmq_send")
        end
        return true if LibZMQ.zmq_send(ptr, topic, topic.bytesize, SNDMORE_DONTWAIT) >= 0 &&
                       LibZMQ.zmq_send(ptr, envelope, envelope.bytesize, DONTWAIT) >= 0

        raise_error("zmq_send")
      end

      # The next frame if one is queued (nil otherwise), and whether more frames follow.
      def recv_frame
        while LibZMQ.zmq_msg_recv(@msg, live, DONTWAIT).negative?
          errno = ZMQ::Util.errno
          return nil if errno == EAGAIN

          raise_error("zmq_msg_recv") unless errno == EINTR
        end
        frame = LibZMQ.zmq_msg_data(@msg).read_string(LibZMQ.zmq_msg_size(@msg))
        [frame, LibZMQ.zmq_msg_more(@msg) == 1]
      end

      # All frames of the next message if one is queued, else nil.
      def recv_message
        first = recv_frame
        return nil if first.nil?

        frames = [first[0]]
        more = first[1]
        while more
          frame, more = recv_frame
          frames << frame
        end
        frames
      end

      # Wait up to +timeout_ms+ for +events+ (ZMQ::POLLIN and/or ZMQ::POLLOUT); true when
      # one is there. The call releases Ruby's lock, so other threads run meanwhile.
      def poll(timeout_ms, events = ZMQ::POLLIN)
        @poll_item[:socket] = live
        @poll_item[:events] = events
        @poll_item[:revents] = 0
        n = LibZMQ.zmq_poll(@poll_item.pointer, 1, timeout_ms)
        return false if n.negative? && ZMQ::Util.errno == EINTR

        raise_error("zmq_poll") if n.negative?
        n.positive?
      end

      def close
        return if @state[0].nil?

        ObjectSpace.undefine_finalizer(self)
        LibZMQ.zmq_msg_close(@msg)
        Transport.close_socket(@state)
      end

      # Closed by +close+, or at exit.
      def closed?
        @state[0].nil?
      end

      private

      def live
        @state[0] or raise ClosedError, "socket is closed"
      end

      def check(rc, what)
        raise_error(what) if rc.negative?
      end

      def raise_error(what)
        raise Error, "#{what}: #{ZMQ::Util.error_string}"
      end
    end

    module_function

    def reconnect(sock, ivl, ivl_max)
      sock.set(ZMQ::RECONNECT_IVL, [1, (ivl * 1000).to_i].max)
      sock.set(ZMQ::RECONNECT_IVL_MAX, [1, (ivl_max * 1000).to_i].max)
      # ZMTP heartbeats find a peer that vanished without closing TCP (a dead host, a cut
      # network): libzmq drops the connection and reconnects instead of waiting for ever.
      sock.set(ZMQ::HEARTBEAT_IVL, 2000)
      sock.set(ZMQ::HEARTBEAT_TIMEOUT, 6000)
    end

    # The publisher's DEALER. IMMEDIATE=1: a message is queued only on a completed
    # connection, so while busd is down a send fails at once and the publisher waits up to
    # its timeout instead of piling messages into a queue. LINGER=0: close comes after flush.
    # SNDHWM above the window, so the in-flight window (not the HWM) bounds what is queued;
    # RCVHWM room for a reply per message in flight, so busd never drops one of our replies.
    def dealer(endpoint, window:, reconnect_ivl:, reconnect_ivl_max:, keys: nil)
      sock = Socket.new(ZMQ::DEALER, endpoint)
      keys&.apply(sock)
      sock.set(ZMQ::IMMEDIATE, 1)
      sock.set(ZMQ::LINGER, 0)
      sock.set(ZMQ::SNDHWM, window + 64)
      sock.set(ZMQ::RCVHWM, 2 * window + 64)
      reconnect(sock, reconnect_ivl, reconnect_ivl_max)
      sock.connect
      sock
    end

    # The subscriber's SUB: a bounded queue (delivery is at most once anyway), no linger.
    def sub(endpoint, rcvhwm:, reconnect_ivl:, reconnect_ivl_max:, keys: nil)
      sock = Socket.new(ZMQ::SUB, endpoint)
      keys&.apply(sock)
      sock.set(ZMQ::LINGER, 0)
      sock.set(ZMQ::RCVHWM, rcvhwm)
      reconnect(sock, reconnect_ivl, reconnect_ivl_max)
      sock.connect
      sock
    end
  end
end
