"""Backends: the inference servers behind the router (embedded, openai_http, simulated)."""
