"""Helpers shared by test suites: real servers on loopback."""
