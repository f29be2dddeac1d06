"""Sinks, where the engine's events go: the database sink, the durable outbox, its delivery.
Django: may import pure rooms, recordings, recorder's models, extensions; not nodes, playback."""
