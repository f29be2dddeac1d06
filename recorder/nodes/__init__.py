"""Nodes, the capture-node app (label `capture`): workers hosting sniffers, leases, sweep, alerts,
sniff and import_pcap. Django, top of the capture side: may import pure rooms, sinks, recordings."""
