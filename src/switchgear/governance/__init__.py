"""Governance: the tamper-evident audit trail (audit.py, verify.py, secret.py, throttle.py)."""
