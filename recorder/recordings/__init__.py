"""Recordings: a finished call becomes audio in storage and a row; waveform, integrity, retention.
Django: may import the pure rooms, recorder's models, extensions; not sinks, nodes, playback."""
