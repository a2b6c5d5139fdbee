"""The embedded inference engine: llama.cpp on the CPU, off the event loop.

``scheduler`` decides which job runs next, ``runner`` executes it (llama-cpp-python), ``engine``
owns the worker thread that repeats step() = schedule → run → update and hands events to the
event loop; ``job`` holds the requests, jobs and events they exchange.
"""
