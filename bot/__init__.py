"""Retell batch-test bot for Slack."""

__version__ = "0.1.0"
