"""Scheduling without a control plane: election per workload, placement, controllers, events."""
