"""``netshrink auto``: compress to a budget automatically (issue 24). Per-layer sensitivities and
real costs of every family's candidates, allocation by integer program, recovery training and
verification on validation, point after point until the time limit; never ends with nothing."""

from netshrink.autocompress.budget import Budget, parse_duration, parse_size
from netshrink.autocompress.choices import KEEP, Choice, SearchSpace
from netshrink.autocompress.plan import Recovery
from netshrink.autocompress.points import SCHEDULE, TEXT_SCHEDULE, PointSpec
from netshrink.autocompress.result import AutoResult
from netshrink.autocompress.search import auto
from netshrink.autocompress.table_store import TimeLimitError
from netshrink.autocompress.text import TextSpace

__all__ = ["KEEP", "SCHEDULE", "TEXT_SCHEDULE", "AutoResult", "Budget", "Choice", "PointSpec", "Recovery",
           "SearchSpace", "TextSpace", "TimeLimitError", "auto", "parse_duration", "parse_size"]
