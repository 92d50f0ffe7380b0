"""Data: fetching conversations, tokenizing, and the token cache format."""
