"""A local Hugging Face Hub for tests: server (LocalHub) and repo builders."""
