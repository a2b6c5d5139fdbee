"""Cache: answer repeated requests from memory, and let identical requests share one call."""
