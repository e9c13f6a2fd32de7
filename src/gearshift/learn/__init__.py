"""Learning from the traffic gearshift routes: shadow comparisons, the outcome store and
feedback (docs/learning.md)."""
