"""Transport: the tasks that own ZeroMQ sockets. One owner task per socket, for its life."""
