"""The command line (``detector-al``): thin typer commands that parse, call the library and print; no rule lives here."""
