"""The jobs the CLI, the scheduler and the web app call (one per command), the
schedule that runs them, and the demo."""

__all__: list[str] = []
