"""Remotes (DESIGN §10): `backends` (the storage interface: folder, obstore), `layout` (what a remote
holds, read without trusting it), `walk` (what a remote lacks, by Merkle diff), `transfer` (packs up,
verified range reads down), `sync` (push, fetch, media on demand), `settings` (`[remote "NAME"]`)."""
