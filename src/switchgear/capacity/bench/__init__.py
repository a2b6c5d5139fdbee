"""``switchgear bench``: a load generator for any OpenAI-compatible URL.

client (lean keep-alive HTTP) → load (one level, open or closed loop) → figures (a level's
statistics, the profile) → sweep (saturation, then rates below it, goodput) → outputs (table,
JSON, CSV, HTML). workload builds the requests.
"""
