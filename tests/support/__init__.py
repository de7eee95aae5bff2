"""Reusable helpers for tests that drive real parts: an sshd on loopback, Docker test images."""
