"""Pure desired-state functions: no I/O, no clock, no randomness."""
