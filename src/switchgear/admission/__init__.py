"""Admission: who is asking (keys, tenants, roles), may they (scopes, limits, budgets), and what
waits or is shed when there is not enough capacity (priority tiers)."""
