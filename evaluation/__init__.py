"""The evaluation study: the paper's comparisons and ablations on held-out CT, as a report in docs/."""
