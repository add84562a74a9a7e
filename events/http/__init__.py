"""The HTTP surface: the stream and long-poll views, their parameters, errors and response bodies."""
