"""Managed prompt templates: named, versioned with the config, rendered into chat requests."""
