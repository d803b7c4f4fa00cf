"""Test harness: real servers as local processes, and waiting helpers."""

from runstream.testing.servers import (
    NatsCluster,
    NatsServer,
    PostgresCluster,
    free_port,
    wait_until,
)

__all__ = ["NatsCluster", "NatsServer", "PostgresCluster", "free_port", "wait_until"]
