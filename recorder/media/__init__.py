"""Media: RTP to PCM and PCM to the archive.

rtp.py parses RTP packets, codecs.py turns payloads into PCM, stream.py places one
direction's audio on a timeline (reordering, loss, DTMF, quality counters), spool.py
writes a call's audio to disk as it arrives. Pure Python with no Django: it runs in the
capture process. PCM everywhere is signed 16-bit little-endian mono bytes.
May import integrations.observations and recorder.lib only.
"""
