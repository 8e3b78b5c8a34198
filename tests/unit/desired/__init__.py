"""Unit tests of the pure desired-state functions."""
