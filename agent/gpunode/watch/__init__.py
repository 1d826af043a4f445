"""The resident watcher (`gpunode watch`): sources, state document, loop and policy."""
