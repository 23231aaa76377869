"""Projections: views of the node's log (queues, supervision, statistics), rebuildable from it."""
