"""The wire layer: untrusted bytes in, kernel values or a coded ``Reject`` out.

Nothing here keeps state or does I/O; the transport layer owns the sockets and calls in.
"""
