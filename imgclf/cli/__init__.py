"""The command line: main() and one module per command group; shared option helpers in options."""
