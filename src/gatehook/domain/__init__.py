"""The pure core: contract models, the catalogue, the decision rules, semver. No I/O here."""
