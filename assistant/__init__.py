"""The domain: everything between a client frame and the diffusion runtime, as sub-packages."""
