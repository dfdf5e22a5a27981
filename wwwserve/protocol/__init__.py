"""Wire protocol v1: subjects, headers, codec and message models (see docs/protocol.md)."""
