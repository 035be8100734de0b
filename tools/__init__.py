"""Developer tools, each a module with main(argv=None)."""
