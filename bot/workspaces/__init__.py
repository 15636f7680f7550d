"""Many workspaces (SPEC §10): what each Slack workspace connects and keeps for itself."""
