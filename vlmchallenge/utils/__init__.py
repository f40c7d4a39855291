"""Small helpers under every layer (import the submodules: atomic, cli, instantiators, runs)."""
