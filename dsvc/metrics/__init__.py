"""The metrics engine (DESIGN §9): per-(frame, class) match cells, a global accumulate, cached by content."""
