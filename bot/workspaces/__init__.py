"""Many workspaces (SPEC §10): installations and tokens (`installations`), a Slack gateway
per workspace (`clients`), the install pages (`oauth`), uninstalls (`lifecycle`), each
workspace's own Retell account (`keys`, `accounts`, `connect`), and `distribution.Workspaces`,
what the application builds from the Slack side in distribution mode (SLACK_CLIENT_ID and
SLACK_CLIENT_SECRET set, no SLACK_BOT_TOKEN).

Nothing is imported here: one workspace loads only `accounts` and what it needs.
"""
