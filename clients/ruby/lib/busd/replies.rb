# frozen_string_literal: true

require "msgpack"

module Busd
  # The usable parts of one reply frame (docs/protocol.md §2):
  # +acc+:: accepted ranges <tt>[lo, hi]</tt>, each within what this socket sent;
  # +rej+:: <tt>[seq, map]</tt> for each rejection of a message this socket sent;
  # +unnumbered+:: rejection maps with a nil +seq+: busd could not read a header frame. A
  #   client that sends well-formed headers never gets one; it cannot be matched to a
  #   message, so it settles nothing (the affected message times out) and is counted;
  # +bad+:: protocol violations seen in the frame (ignored, counted);
  # +draining+:: busd is shutting down.
  Reply = Struct.new(:acc, :rej, :unnumbered, :bad, :draining)

  # Reading replies: untrusted bytes in, plain values out. A range outside what was sent is
  # dropped whole (not clamped), so a bogus reply cannot settle a message busd never answered.
  module Replies
    module_function

    # The reply +frame+ for a socket that has sent sequence numbers 1..+last_seq+.
    def read(frame, last_seq)
      reply = begin
        MessagePack.unpack(frame)
      rescue MessagePack::UnpackError, EOFError, ArgumentError, RangeError
        nil
      end
      return Reply.new([], [], [], 1, false) unless reply.is_a?(Hash)

      bad = 0
      acc_in = reply.fetch("acc", [])
      rej_in = reply.fetch("rej", [])
      unless acc_in.is_a?(Array)
        bad += 1
        acc_in = []
      end
      unless rej_in.is_a?(Array)
        bad += 1
        rej_in = []
      end
      acc = []
      acc_in.each do |pair|
        if good_range?(pair, last_seq)
          acc << pair
        else
          bad += 1
        end
      end
      rej = []
      unnumbered = []
      rej_in.each do |item|
        seq = item.is_a?(Hash) ? item.fetch("seq", 0) : 0
        if seq.nil?
          unnumbered << item
        elsif !seq.is_a?(Integer) || seq < 1 || seq > last_seq
          bad += 1
        else
          bad += 1 unless item["code"].is_a?(String) # still a refusal: taken as internal
          rej << [seq, item]
        end
      end
      Reply.new(acc, rej, unnumbered, bad, reply["draining"] == true)
    end

    def good_range?(pair, last_seq)
      pair.is_a?(Array) && pair.size == 2 && pair.all?(Integer) &&
        pair[0] >= 1 && pair[0] <= pair[1] && pair[1] <= last_seq
    end
  end
end
