"""Audit consumers: reading the audit stream, and forensics over it."""
