"""Speaker-neutral BGP: types, the Speaker protocol, a fake, and GoBGP/ExaBGP adapters."""
