"""Playback: pages, API, audio with ranges, search, access and the audit trail. Django: may
import recordings, recorder's models, extensions and qms.lib; nothing of the capture side."""
