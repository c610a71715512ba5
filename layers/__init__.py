"""The Lambda dependency layer: its pinned requirements and the code that builds it."""
