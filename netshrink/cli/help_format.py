"""The help layout of every ``netshrink`` command: defaults shown, examples kept as written."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default (left out where there is none: ``None``, an off
    flag or a suppressed default); descriptions and epilogs are wrapped by paragraph, and a
    paragraph of indented lines (examples) keeps its line breaks."""

    @staticmethod
    def has_default(action: argparse.Action) -> bool:
        """Whether help should show ``action``'s default: not for ``None``, an off flag or ``SUPPRESS``."""
        return action.default is not None and action.default is not False and action.default != argparse.SUPPRESS

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return super()._get_help_string(action) if self.has_default(action) else action.help

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.split("\n\n"):
            lines = paragraph.splitlines()
            if any(line.startswith("  ") for line in lines):
                paragraphs.append("\n".join(indent + line for line in lines))
            else:
                paragraphs.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(paragraphs)
