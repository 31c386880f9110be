# frozen_string_literal: true

require_relative "replies"
require_relative "errors"

module Busd
  # A binary min-heap of [due, order, receipt]: the timers of messages waiting to be sent.
  class TimerHeap
    def initialize
      @items = []
    end

    def empty?
      @items.empty?
    end

    def peek
      @items.first
    end

    def push(item)
      items = @items
      items << item
      i = items.size - 1
      while i.positive?
        parent = (i - 1) / 2
        break unless before?(items[i], items[parent])

        items[i], items[parent] = items[parent], items[i]
        i = parent
      end
    end

    def pop
      items = @items
      top = items.first
      last = items.pop
      return top if items.empty?

      items[0] = last
      i = 0
      loop do
        left = 2 * i + 1
        break if left >= items.size

        child = left + 1 < items.size && before?(items[left + 1], items[left]) ? left + 1 : left
        break unless before?(items[child], items[i])

        items[i], items[child] = items[child], items[i]
        i = child
      end
      top
    end

    def clear
      @items.clear
    end

    private

    def before?(a, b)
      a[0] < b[0] || (a[0] == b[0] && a[1] < b[1])
    end
  end

  # Messages sent and not yet answered, messages held back, and failures: the bookkeeping
  # of one Publisher. No I/O here: the publisher reads the socket and calls +on_reply+ and
  # +expire+, and sends what +due_sends+ hands back. Time is monotonic seconds, passed in.
  #
  # Order through retries. While a message of a topic waits to be retried (+rate_limited+;
  # +disabled+ when the caller asked to wait; +not_ready+), that topic is *held*: its later
  # publishes are queued here instead of being sent, and the topic's queue is sent one
  # message at a time, in publish order, each only after the one before it was settled. A
  # later message of the topic therefore never overtakes a retried one, except messages
  # that were already on the wire when the refusal was judged: one of those is accepted
  # ahead of it when a token arrived in between (if refused too, it joins the queue in
  # order). The queue ends, and the topic is sent pipelined again, once it is empty.
  class InFlight
    # How often a +disabled+ message is retried when its caller asked to wait.
    DISABLED_RETRY_INTERVAL = 0.25
    # A send that found the socket full or disconnected is tried again after this long.
    RESEND_DELAY = 0.05

    attr_reader :count, :next_seq, :bad_replies, :unnumbered, :settled, :timeout

    def initialize(timeout)
      @timeout = timeout
      @count = 0 # messages whose fate is not known yet (sent, or waiting to be sent)
      @settled = 0
      @failed = []
      @next_seq = 1
      @outstanding = {}
      # [reply deadline, seq, receipt] in send order; deadlines grow with it (one timeout).
      @deadlines = []
      @held = {} # topic => receipts waiting their turn, in publish order
      @timers = TimerHeap.new
      @bad_replies = 0
      @unnumbered = 0
      @draining = false
    end

    # The latest reply said busd is shutting down.
    def draining?
      @draining
    end

    # A publish on +topic+ must wait behind a refused message of that topic.
    def held?(topic)
      @held.key?(topic)
    end

    # Queue a new message behind the topic's held ones.
    def hold(receipt, now)
      admit(receipt)
      receipt.state = :waiting
      receipt.due = now
      receipt.limit = receipt.hold_until
      enqueue(receipt)
    end

    # +receipt+ went out with sequence number +next_seq+.
    def sent(receipt, now)
      seq = @next_seq
      @next_seq = seq + 1
      admit(receipt)
      receipt.seq = seq
      receipt.attempts += 1
      receipt.first_sent ||= now
      receipt.state = :in_flight
      @outstanding[seq] = receipt
      @deadlines << [now + @timeout, seq, receipt]
    end

    # Apply one reply frame. What breaks the protocol is counted in +bad_replies+ and
    # changes nothing; answers about messages no longer awaited (timed out) are ignored.
    def on_reply(frame, now)
      reply = Replies.read(frame, @next_seq - 1)
      @bad_replies += reply.bad
      @unnumbered += reply.unnumbered.size
      @draining = reply.draining
      outstanding = @outstanding
      reply.acc.each do |lo, hi|
        seqs_in(lo, hi).each do |seq|
          receipt = outstanding.delete(seq)
          settle(receipt, nil, now) if receipt
        end
      end
      reply.rej.each do |seq, item|
        receipt = outstanding.delete(seq)
        rejected(receipt, Busd.rejection_from(item), now) if receipt
      end
    end

    # Time out every message whose reply deadline has passed.
    def expire(now)
      dq = @deadlines
      until dq.empty?
        deadline, seq, receipt = dq.first
        if receipt.done? || receipt.seq != seq || !@outstanding.key?(seq)
          dq.shift
          next
        end
        break if deadline > now

        dq.shift
        @outstanding.delete(seq)
        settle(receipt, PublishTimeout.new(
          "no reply from busd within #{@timeout} s (fate unknown)", sent: true, seq: seq
        ), now)
      end
    end

    # Held messages whose turn has come, to be sent now (with a new sequence number).
    def due_sends(now)
      out = []
      until @timers.empty? || @timers.peek[0] > now
        receipt = @timers.pop[2]
        next unless receipt.state == :waiting && @held[receipt.topic]&.first.equal?(receipt)

        if now > receipt.limit
          settle(receipt, receipt.kept_error || PublishTimeout.new(
            "held behind an earlier message of topic #{receipt.topic} past its deadline",
            sent: false
          ), now)
        else
          receipt.state = :due # once in the list, whatever timers it still has
          out << receipt
        end
      end
      out
    end

    # A due message could not be handed to the socket: try again shortly, or give up.
    def send_failed(receipt, now)
      receipt.state = :waiting
      receipt.due = now + RESEND_DELAY
      if receipt.due <= receipt.limit
        @timers.push([receipt.due, receipt.order, receipt])
      else
        settle(receipt, receipt.kept_error ||
          PublishTimeout.new("could not send before the deadline", sent: false), now)
      end
    end

    # The earliest monotonic time at which +expire+ or +due_sends+ has work, or nil.
    def next_wakeup
      dq = @deadlines
      dq.shift while !dq.empty? && (dq.first[2].done? || dq.first[2].seq != dq.first[1])
      t = dq.empty? ? nil : dq.first[0]
      timer = @timers.peek
      t = timer[0] if timer && (t.nil? || timer[0] < t)
      t
    end

    # Errors of the messages failed since the last call, except those +result+ raised.
    def take_failures
      failed = @failed
      @failed = []
      failed.reject(&:reported).map(&:error)
    end

    # Fail every message not settled yet with ClosedError.
    def close(now)
      pending = @outstanding.values + @held.values.flatten
      pending.each do |receipt|
        settle(receipt, ClosedError.new("closed before busd answered (fate unknown)"), now)
      end
      @outstanding.clear
      @deadlines.clear
      @timers.clear
      @held.clear
    end

    private

    def admit(receipt)
      @count += 1 if receipt.state == :new
    end

    def seqs_in(lo, hi)
      return (lo..hi) if hi - lo < @outstanding.size

      @outstanding.keys.select { |s| s >= lo && s <= hi }
    end

    def rejected(receipt, error, now)
      due, limit = retry_due(error, receipt, now)
      if due
        receipt.kept_error = error # the error if the retry cannot be sent in time
        receipt.state = :waiting
        receipt.due = due
        receipt.limit = limit
        enqueue(receipt)
      else
        settle(receipt, error, now)
      end
    end

    # When a refused message is sent again, and until when it may be: after
    # retry_after_ms for rate_limited, every 250 ms for disabled when told to wait, both
    # within the caller's retry deadline; not_ready within that or the reply timeout.
    def retry_due(error, receipt, now)
      case error
      when RateLimited
        due = now + error.retry_after_ms / 1000.0
        limit = receipt.retry_until
      when Disabled
        return nil unless receipt.wait_disabled

        due = now + DISABLED_RETRY_INTERVAL
        limit = receipt.retry_until
      when NotReady
        due = now + error.retry_after_ms / 1000.0
        limit = [receipt.retry_until, receipt.first_sent + @timeout].max
      else
        return nil
      end
      due <= limit ? [due, limit] : nil
    end

    # Into the topic's queue, in publish order; the head's timer is set.
    def enqueue(receipt)
      queue = (@held[receipt.topic] ||= [])
      if receipt.held # refused again after its turn came: it keeps its place
        at = queue.index(receipt)
      else
        at = queue.bsearch_index { |other| other.order > receipt.order } || queue.size
        queue.insert(at, receipt)
        receipt.held = true
      end
      @timers.push([receipt.due, receipt.order, receipt]) if at.zero?
    end

    def settle(receipt, error, now)
      return if receipt.done?

      receipt.finish(error)
      @count -= 1
      @settled += 1
      @failed << receipt if error
      release(receipt, now) if receipt.held
    end

    # +receipt+ left its topic's queue: the next one's turn, or the topic is free again.
    def release(receipt, now)
      queue = @held[receipt.topic]
      return if queue.nil?

      unless queue.first.equal?(receipt)
        queue.delete(receipt) # not its turn yet (a timed-out head's successor settled first)
        return
      end
      queue.shift
      head = queue.first
      if head.nil?
        @held.delete(receipt.topic)
      elsif head.state == :waiting
        head.due = now if head.due < now
        @timers.push([head.due, head.order, head])
      end
    end
  end
end
