"""Test doubles of Slack and Retell, and the harness that runs the bot against them.

A public package (like ``starlette.testclient``): the tests, ``retell-bot demo`` and the
benchmarks all use it, so it ships with the bot. It was ``bot.standins`` before issue 15.
"""
