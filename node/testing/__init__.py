"""Test support shipped with the package: in-process nodes and real node processes."""
