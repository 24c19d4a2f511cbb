"""Membership: who is in the cluster and who is alive, by SWIM + Lifeguard over the mesh."""
