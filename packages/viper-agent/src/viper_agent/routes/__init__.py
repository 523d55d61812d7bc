"""The agent's HTTP surfaces, one module each (DESIGN.md's agent table)."""
