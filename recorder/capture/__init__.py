"""Capture, packets in: sources, link layers, IP and TCP reassembly, synthetic traffic. Pure:
may import recorder.media, .lib and integrations.observations; never the engine, nor Django."""
