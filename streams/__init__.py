"""intentflow streaming worker: clickstream -> interest profiles -> purchase-intent scores."""

__version__ = "0.1.0"
