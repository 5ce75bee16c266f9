"""The rule studio: its page and routes, the checker worker, the draft workbench, the language server."""
