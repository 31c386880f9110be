# frozen_string_literal: true

require "test_helper"

# Busd::RateLimiter on real files in a temporary directory, with a clock the test moves
# (the limiter's buckets and re-reads run on it) and sleeps recorded instead of slept.
class RateLimiterTest < Minitest::Test
  def setup
    @root = Dir.mktmpdir("busd-rates-")
    @dir = File.join(@root, "rates")
    Dir.mkdir(@dir)
    @now = 100.0
    @slept = []
    @limiter = Busd::RateLimiter.new(@dir, clock: -> { @now },
                                           sleeper: ->(s) { @slept << s; @now += s })
  end

  def teardown
    FileUtils.rm_rf(@root)
  end

  def write(key, content)
    File.write(File.join(@dir, key), content)
    @now += 1.0 # past the re-read interval
  end

  def test_without_a_file_the_rate_the_code_gives_applies
    ran = 0
    3.times { @limiter.limit("publish", 2) { ran += 1 } }
    assert_equal 3, ran
    assert_equal 1, @slept.size
    assert_in_delta 0.5, @slept[0], 1e-9
  end

  def test_without_a_file_or_a_rate_there_is_no_limit
    100.times { @limiter.acquire("jobs") }
    assert_empty @slept
    assert_nil @limiter.limit_for("jobs")
  end

  def test_the_file_wins_over_the_code_and_zero_stops_the_key
    write("publish", "0\n")
    error = assert_raises(Busd::Disabled) { @limiter.limit("publish", 1000) { flunk "ran" } }
    assert_equal "publish", error.key
    assert_equal "disabled", error.code
    write("publish", "1000 1")
    assert @limiter.try_acquire("publish", 5)
    refute @limiter.try_acquire("publish", 5)
  end

  def test_disabled_with_a_timeout_waits_for_the_operator_then_gives_up
    write("publish", "0")
    assert_raises(Busd::Disabled) { @limiter.acquire("publish", timeout: 3.0) }
    assert_in_delta 3.0, @slept.sum, 1e-6
    write("publish", "0")
    mover = ->(s) { @slept << s; @now += s; File.write(File.join(@dir, "publish"), "5") }
    limiter = Busd::RateLimiter.new(@dir, clock: -> { @now }, sleeper: mover)
    limiter.acquire("publish", timeout: 3.0) # re-enabled while it waited: passes
  end

  def test_no_token_within_the_timeout_raises_rate_limited_at_once
    write("publish", "1 1")
    @limiter.acquire("publish")
    error = assert_raises(Busd::RateLimited) { @limiter.acquire("publish", timeout: 0.5) }
    assert_equal ["publish", 1000], [error.key, error.retry_after_ms]
    assert_empty @slept
  end

  def test_bad_or_empty_content_keeps_the_last_good_value_and_says_why
    write("publish", "7")
    assert_equal 7.0, @limiter.limit_for("publish").rate
    write("publish", "fast")
    assert_equal 7.0, @limiter.limit_for("publish").rate
    assert_equal "content", @limiter.problems["publish"].kind
    write("publish", "")
    assert_equal 7.0, @limiter.limit_for("publish").rate
    assert_equal "empty", @limiter.problems["publish"].kind
    write("publish", "8")
    assert_equal 8.0, @limiter.limit_for("publish").rate
    assert_empty @limiter.problems
  end

  def test_a_file_is_reread_at_most_once_per_interval
    write("publish", "7")
    assert_equal 7.0, @limiter.limit_for("publish").rate
    File.write(File.join(@dir, "publish"), "8")
    @now += 0.5
    assert_equal 7.0, @limiter.limit_for("publish").rate
    @now += 0.5
    assert_equal 8.0, @limiter.limit_for("publish").rate
  end

  def test_a_deleted_file_removes_its_limit
    write("publish", "0")
    refute @limiter.try_acquire("publish")
    File.delete(File.join(@dir, "publish"))
    @now += 1.0
    assert @limiter.try_acquire("publish")
    assert_nil @limiter.limit_for("publish")
  end

  def test_a_directory_in_place_of_the_file_keeps_the_last_good_value
    write("publish", "0")
    refute @limiter.try_acquire("publish")
    File.delete(File.join(@dir, "publish"))
    Dir.mkdir(File.join(@dir, "publish"))
    @now += 1.0
    refute @limiter.try_acquire("publish")
    assert_equal "not_a_file", @limiter.problems["publish"].kind
  end

  def test_a_deleted_directory_keeps_every_kill_switch
    write("publish", "0")
    refute @limiter.try_acquire("publish")
    FileUtils.rm_rf(@dir)
    @now += 1.0
    refute @limiter.try_acquire("publish")
    assert_equal "directory", @limiter.problems["publish"].kind
  end

  def test_a_recreated_directory_without_the_file_keeps_it_as_an_orphan_until_one_appears
    write("publish", "0")
    refute @limiter.try_acquire("publish")
    FileUtils.rm_rf(@dir)
    Dir.mkdir(@dir)
    @now += 1.0
    refute @limiter.try_acquire("publish")
    assert_equal "orphan", @limiter.problems["publish"].kind
    write("publish", "5")
    assert @limiter.try_acquire("publish")
    assert_empty @limiter.problems
  end

  # As root, mode 000 does not stop a reader: the check runs in a child process dropped to
  # uid 65534 (nobody), so EACCES is genuine, and reports back through a pipe.
  def test_an_unreadable_file_keeps_the_last_good_value
    write("publish", "0")
    path = File.join(@dir, "publish")
    if Process.uid.zero?
      File.chmod(0o755, @root, @dir)
      File.chown(65_534, 65_534, path)
    end
    reader, writer = IO.pipe
    pid = fork do
      reader.close
      Process::Sys.setresuid(65_534, 65_534, 65_534) if Process.uid.zero?
      outcome = [@limiter.try_acquire("publish")]
      File.chmod(0o000, path)
      @now += 1.0
      outcome += [@limiter.try_acquire("publish"), @limiter.problems["publish"]&.kind]
      writer.write(JSON.generate(outcome))
      writer.close
      exit!(0)
    end
    writer.close
    outcome = JSON.parse(reader.read)
    Process.wait(pid)
    assert_equal [false, false, "unreadable"], outcome
  end

  def test_a_key_that_cannot_be_a_file_name_is_refused
    assert_raises(ArgumentError) { @limiter.acquire("a/b") }
    assert_raises(ArgumentError) { @limiter.acquire(".hidden") }
  end

  def test_busd_limit_uses_the_process_limiter
    previous = Busd.rate_limiter
    Busd.rate_limiter = @limiter
    write("publish", "0")
    assert_raises(Busd::Disabled) { Busd.limit("publish", 10) { flunk "ran" } }
    write("publish", "10")
    assert_equal :ran, Busd.limit("publish", 10) { :ran }
  ensure
    Busd.rate_limiter = previous
  end
end
