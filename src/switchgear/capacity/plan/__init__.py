"""Capacity planning: a queueing model calibrated on a bench profile, and the plan built on it."""
