"""A small wine classifier: data, the net, and two ways to train it (a plain loop, Lightning)."""
