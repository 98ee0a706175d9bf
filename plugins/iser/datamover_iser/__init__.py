"""iSER (RFC 7145): iSCSI over RDMA, on pyverbs or the built-in software provider."""
