"""JetStream: connect, provision, publish, consume, session aggregate."""
