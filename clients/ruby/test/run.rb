# frozen_string_literal: true

# Loads the test files named on the command line; minitest runs them at exit. Arguments
# after "--" go to minitest (--verbose, --seed N, --name /pattern/).
#   ruby -Ilib -Itest test/run.rb test/unit/*_test.rb -- --verbose
split = ARGV.index("--") || ARGV.size
files = ARGV[0...split]
ARGV.replace(ARGV[(split + 1)..] || [])
files.each { |file| require File.expand_path(file) }
