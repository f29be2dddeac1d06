"""Engine, packets -> observations -> live calls: the demux, the call table, floods. Pure: may
import recorder.capture, .media, .lib and the pure decoders of integrations; never Django."""
