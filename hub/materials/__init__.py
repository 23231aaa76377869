"""Material files (scans, PDFs, 高拍仪 output) by SHA-256 digest: the node's store, what erasure
does to them, and fetching a case's materials from a peer. See docs/materials.md."""
