"""Names the command line recognises before Hydra sees it (a leaf: ``exporter.cli.startup`` reads it
before anything else of the tool is imported)."""

# Subcommands that read finished builds (exporter.cli.card); anything else is the Hydra app.
READERS = ("card", "diff", "verify")
# Override keys through which a run could get another hydra.mode (a sweep) or read other configs.
MODE_KEYS = ("hydra.mode", "hydra.searchpath")
