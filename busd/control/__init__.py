"""Operator control at run time: the rates directory and the control socket.

``rates_dir.RatesDir`` watches the rates directory and hands new immutable limits to a
callback; ``server.ControlServer`` serves JSON-lines commands on a Unix socket, with the rate
commands from ``server.rate_handlers``.
"""
