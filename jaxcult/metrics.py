"""Names shared by every place that prints or plots metrics."""

PERCENT_METRICS = ("accuracy", "token_accuracy", "f1", "exact_match")
