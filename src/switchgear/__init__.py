"""Switchgear: an AI inference gateway and operations stack."""

__version__ = "0.1.0"
