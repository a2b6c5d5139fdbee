"""Guards: checks and transformations of request and response content (redaction first)."""
