"""Engines turn a request into a stream of text and report their load; one interface, many kinds."""
