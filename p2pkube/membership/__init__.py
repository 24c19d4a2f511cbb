"""Membership: who is in the cluster and who is alive, from ephemeral heartbeats."""
