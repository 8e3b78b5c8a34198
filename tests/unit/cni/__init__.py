"""Unit tests for the CNI plugin: config, environment, address store, wire formats."""
