"""Engine, packets -> observations -> live calls: the demux, the call table, floods, the pcap
file's fast path, the Sink protocol. Pure: may import recorder.capture, .media, .lib and the
pure decoders of integrations; never Django."""
