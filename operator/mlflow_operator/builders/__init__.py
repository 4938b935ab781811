"""Pure builders: spec in, Kubernetes objects out. No I/O."""
