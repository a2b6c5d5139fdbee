"""Governance: config versions in the record store, reviewed change requests and hot apply."""
