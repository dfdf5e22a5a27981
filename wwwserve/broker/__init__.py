"""nats-server configs (rendered from broker/ templates) and the supervised nats-server child."""
