"""Self-contained HTML reports of a recipe run (plots embedded as base64 PNG)."""

from netshrink.report.html import write_html_report

__all__ = ["write_html_report"]
