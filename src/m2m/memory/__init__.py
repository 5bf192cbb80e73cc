"""Memory tiers for HRM2 indexes larger than RAM: cold (disk), warm (RAM cache), hot (GPU).

``TieredHRM2`` serves a built ``HRM2Index`` from a tier directory with the same results as
the in-RAM index; ``TierConfig`` holds the byte budgets. See docs/memory.md.
"""

from m2m.memory.tiers import TierConfig, TieredHRM2, write_tier_directory

__all__ = ["TierConfig", "TieredHRM2", "write_tier_directory"]
