# frozen_string_literal: true

require "test_helper"

# The rate-file grammar of docs/rates.md, case for case with busd_protocol/rates.py.
class RatesTest < Minitest::Test
  GOOD = { "500" => [500, 500], "0.5" => [0.5, 1], "1000 100" => [1000, 100], "0" => [0, 1],
           "5\n" => [5, 5], "5 \t" => [5, 5], "2\t3\n" => [2, 3], "007" => [7, 7] }.freeze
  BAD = ["nan", "inf", "-5", "+5", "1_000", "1e3", ".5", "5.", "\u0665", "5\r\n", "5\n\n",
         "5 0", "2000000000", " 5", "5 5 5", "abc", "5\x00"].freeze

  def test_good_files_give_rate_and_burst
    GOOD.each do |content, (rate, burst)|
      limit = Busd::Rates.read(content)
      assert_equal [rate.to_f, burst.to_f], [limit.rate, limit.burst], content.inspect
    end
  end

  def test_bad_files_are_refused_with_a_reason
    BAD.each do |content|
      error = assert_raises(Busd::Rates::FileError, content.inspect) { Busd::Rates.read(content) }
      assert_equal "content", error.kind
    end
    assert_nil Busd::Rates.parse("x")
  end

  def test_an_empty_file_is_not_yet_written_and_a_big_one_is_no_rate_file
    assert_equal "empty", assert_raises(Busd::Rates::FileError) { Busd::Rates.read("") }.kind
    assert_match(/over 256 bytes/, assert_raises(Busd::Rates::FileError) { Busd::Rates.read("1#{" " * 300}") }.message)
  end

  def test_keys_are_file_names
    assert_nil Busd::Rates.file_name_problem("publish.release")
    assert_nil Busd::Rates.file_name_problem("jobs")
    ["", ".hidden", "a/b", "a b", "a\tb", "x" * 256].each do |key|
      refute_nil Busd::Rates.file_name_problem(key), key.inspect
    end
  end

  def test_a_bucket_starts_full_refills_at_its_rate_and_says_how_long_to_wait
    bucket = Busd::Rates::TokenBucket.new(Busd::Rates::Limit.of(10, 2), 0.0)
    assert_equal 0.0, bucket.take(0.0)
    assert_equal 0.0, bucket.take(0.0)
    assert_in_delta 0.1, bucket.take(0.0), 1e-9
    assert_equal 0.0, bucket.take(0.1) # waiting exactly what it said is enough
  end

  def test_a_changed_limit_keeps_tokens_and_a_reenabled_one_starts_full
    bucket = Busd::Rates::TokenBucket.new(Busd::Rates::Limit.of(10, 5), 0.0)
    3.times { bucket.take(0.0) }
    bucket.reconfigure(Busd::Rates::Limit.of(10, 1), 0.0)
    assert_equal 1.0, bucket.tokens
    bucket.reconfigure(Busd::Rates::Limit.of(0), 0.0)
    assert_equal 0.0, bucket.tokens
    bucket.reconfigure(Busd::Rates::Limit.of(10, 4), 0.0)
    assert_equal 4.0, bucket.tokens
  end

  def test_limits_out_of_range_are_refused
    assert_raises(ArgumentError) { Busd::Rates::Limit.of(-1) }
    assert_raises(ArgumentError) { Busd::Rates::Limit.of(2e9) }
    assert_raises(ArgumentError) { Busd::Rates::Limit.of(5, 0.5) }
    assert_raises(ArgumentError) { Busd::Rates::Limit.of(Float::NAN) }
  end
end
