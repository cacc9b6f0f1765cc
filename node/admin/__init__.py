"""Offline and out-of-band operations on a node's data dir (``blobstore-node SUBCOMMAND``).

These run beside a node rather than inside one: ``backup`` copies a node's
metadata while it serves, ``restore`` prepares a data dir from such a copy
before a node starts. They reach the data dir only through the same storage
modules the node uses (``node.store.db``, ``node.raft.storage``), so what they
write is exactly what a node reads.
"""
