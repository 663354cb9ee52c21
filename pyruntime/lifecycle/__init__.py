"""The container lifecycle: create, start, kill, delete, exec, state, hooks, the channel."""
