# frozen_string_literal: true

module Busd
  # The fate of one published message. +result+ waits for it; +done?+, +accepted?+ and
  # +error+ look without waiting.
  class Receipt
    attr_reader :topic, :id, :seq, :attempts, :order

    # Bookkeeping of Busd::InFlight; not for callers.
    attr_accessor :topic_frame, :envelope, :state, :due, :limit, :kept_error, :first_sent,
                  :held, :reported
    attr_writer :seq, :attempts

    # +order+ numbers the publishes of one publisher: a topic's held messages go in this order.
    # +retry_until+ (monotonic seconds, 0 for none) bounds retries of rate refusals;
    # +hold_until+ bounds how long it may wait unsent behind a refused message of its topic.
    def initialize(owner, topic, topic_frame, envelope, id, order:, retry_until:, hold_until:,
                   wait_disabled:)
      @owner = owner
      @topic = topic
      @topic_frame = topic_frame
      @envelope = envelope
      @id = id
      @order = order
      @retry_until = retry_until
      @hold_until = hold_until
      @wait_disabled = wait_disabled
      @seq = 0
      @attempts = 0
      @state = :new
      @held = false
      @reported = false
      @error = nil
    end

    attr_reader :retry_until, :hold_until, :wait_disabled

    # True once the message was accepted or failed.
    def done?
      @state == :done
    end

    def accepted?
      done? && @error.nil?
    end

    # The failure once done; nil while pending or when accepted.
    def error
      done? ? @error : nil
    end

    # Wait until the fate is known; raise the message's error (Busd::Rejected,
    # Busd::PublishTimeout, ...) or return the receipt when it was accepted. With
    # +timeout:+ nil it waits as long as the message can take (its reply deadline, and its
    # retry deadline); past a shorter +timeout+ it raises PublishTimeout and stays pending.
    def result(timeout: nil)
      @owner.wait_for(self, timeout) unless done?
      if @error
        @reported = true
        raise @error
      end
      self
    end

    # Settled: accepted (+error+ nil) or failed.
    def finish(error)
      @state = :done
      @envelope = nil # the bytes are no longer needed; the caller may keep the receipt
      @error = error
      return if error.nil?

      error.id = @id
      error.topic = @topic
    end

    def inspect
      fate = if !done? then "pending"
             elsif @error then "failed: #{@error.message}"
             else "accepted"
             end
      "#<#{self.class.name} id=#{@id} topic=#{@topic} #{fate}>"
    end
    alias to_s inspect
  end
end
