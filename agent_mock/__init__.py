"""The fleet simulator: speaks the agent protocol of CONTRACT.md §6 (no server code)."""
