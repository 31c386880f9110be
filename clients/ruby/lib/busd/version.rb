# frozen_string_literal: true

module Busd
  VERSION = "0.1.0"
end
