"""Governance: the tamper-evident audit trail (audit.py, verify.py, secret.py, throttle.py), and
config versions in the record store with reviewed change requests and hot apply (versions.py,
changes.py, follow.py)."""
