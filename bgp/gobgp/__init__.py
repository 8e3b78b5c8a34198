"""GoBGP adapter: runs gobgpd and drives it over gRPC; protobuf never leaves this package."""
