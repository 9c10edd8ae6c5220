"""Training code of the project's embedded default model ("shapes")."""
