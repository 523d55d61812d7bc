"""What the agent does to pages, apart from HTTP: navigation, DOM, script, capture, profile."""
