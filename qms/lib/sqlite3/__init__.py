"""Django's SQLite backend with each short statement's placeholders converted once (base.py)."""
