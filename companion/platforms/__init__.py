"""HTTP management clients for the voice platforms; independent of the runtime."""
