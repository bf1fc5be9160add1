"""inputs: readers that stream and check what an edition is made of.

The Personalize batch output, the items catalog, the audience, the editors' picks and the
completion history, from local paths or ``s3://`` URIs. A bad row is counted by reason with its
``file:line`` (`calm_mail.records.SkipCounter`); a missing column, an unreadable file or a
missing editorial list raises `calm_mail.errors.InputError` before anything is sent.
"""

from calm_mail.inputs.audience import iter_audience
from calm_mail.inputs.catalog import read_catalog
from calm_mail.inputs.completions import iter_completions
from calm_mail.inputs.editorial import read_editorial
from calm_mail.inputs.personalize import check_recommendation_quality, iter_recommendations
from calm_mail.inputs.sources import list_prefix, open_source

__all__ = [
    "check_recommendation_quality",
    "iter_audience",
    "iter_completions",
    "iter_recommendations",
    "list_prefix",
    "open_source",
    "read_catalog",
    "read_editorial",
]
