"""Supervision: restart crashed peripheral tasks with backoff, within a budget."""
