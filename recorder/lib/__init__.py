"""Small helpers every room may use. Pure: no Django, no other room of QMS, only the
standard library, so the capture process, the engine and the Django rooms share them.

files.py: atomic file writes, directory fsyncs, JSON files and flock() locks.
"""
