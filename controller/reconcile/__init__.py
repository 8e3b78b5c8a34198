"""Reconcilers: one per concern, run in a fixed order by the agent's loop."""
