"""virnucpro-extract: FastESM2 + DNABERT-S training features for VirNucPro."""
