"""`wwwserve bench`: the same trace, the same providers, three dispatch policies, side by side."""
