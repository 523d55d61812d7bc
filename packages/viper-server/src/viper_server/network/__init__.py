"""Host networking for microVMs: the bridge, one tap per VM, NAT and isolation rules."""
