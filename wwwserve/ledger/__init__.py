"""Credits: signed receipts and stakes, and balances every provider computes identically."""
