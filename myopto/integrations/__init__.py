"""Integrations with the optimisers myopto serves. Each module imports its framework only when
imported itself: `import myopto` imports none of them."""
