"""The worker side: job launcher (fork server), job process, fingerprint collection."""
