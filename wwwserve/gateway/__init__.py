"""OpenAI-compatible HTTP gateway: the whole network as one OpenAI endpoint."""
