"""The search engine and the `optsearch` command line."""
