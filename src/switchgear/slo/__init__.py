"""Service level objectives: specs, error budgets, multi-window burn-rate alerts, Prometheus rules."""
